"""``alexnet optimize``: a checkpoint (or FP32 ONNX) -> every variant the target runs, evaluated and benchmarked -> the file to ship.

Stages: export + parity check (checkpoints), FP16, accuracy-aware INT8, BF16 (OpenVINO, when
its runtime is present), evaluation of each variant on ``--data`` (evaluate.py, the same
numbers ``alexnet eval`` gives), benchmarks on every runtime of the target
(bench.runner.run_bench), then report.md / report.json / pareto.png and the recommendation
(best-latency.onnx, best-throughput.onnx).

Each finished stage leaves its result in ``OUT_DIR/.stages/NAME.json`` keyed by a hash of
its inputs and of the files it wrote, so an interrupted run resumes where it stopped and a
changed input redoes exactly the stages that depend on it. The inputs are contents, never
names: the source model's bytes (with an ONNX file's external weights) in every stage's key,
a digest of every image's relative path, label and bytes for the stages that read ``--data``
or ``--calib`` (both hashed once per run, streamed), the options that change the stage's
result, and the toolkit version.

A run holds an exclusive lock on OUT_DIR (``flock`` on ``OUT_DIR/.alexnet-optimize.lock``,
which names the holder): a second run into the same folder stops at once with exit 2 and
touches nothing there, instead of two runs mixing each other's files and cached stages.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from alexnet_deploy import __version__
from alexnet_deploy.errors import AlexnetError, InputError
from alexnet_deploy.fileio import FolderLock, atomic_write, atomic_write_bytes, sha256_file
from alexnet_deploy.progress import ProgressLike, as_progress

TARGETS = ("cpu", "tensorrt")
STAGES = ".stages"
LOCK = ".alexnet-optimize.lock"


@dataclass
class _Stages:
    """Results of finished stages, cached on disk under OUT_DIR/.stages."""

    folder: Path
    resumed: list[str] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def run(self, name: str, inputs: dict[str, Any], work: Callable[[], dict[str, Any]], progress) -> dict[str, Any]:
        """``work()``'s result, or the cached one when ``inputs`` and the files it wrote are unchanged.

        ``work`` returns a JSON-able dict; its ``files`` entry (paths) is hashed into the cache.
        """
        key = hashlib.sha256(json.dumps({"version": __version__, **inputs}, sort_keys=True, default=str).encode()).hexdigest()
        cache = self.folder / f"{name}.json"
        if cache.exists():
            try:
                saved = json.loads(cache.read_text())
                files_ok = all(Path(path).exists() and sha256_file(Path(path)) == digest for path, digest in saved["files"].items())
                if saved["key"] == key and files_ok:
                    self.resumed.append(name)
                    self.seconds[name] = saved["seconds"]
                    progress(f"{name}: finished in an earlier run, reused")
                    return saved["result"]
            except (ValueError, KeyError, OSError):
                pass  # an unreadable cache entry is redone
        started = time.perf_counter()
        result = work()
        seconds = time.perf_counter() - started
        files = {str(path): sha256_file(Path(path)) for path in result.get("files", [])}
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cache, json.dumps({"key": key, "result": result, "files": files, "seconds": seconds}, default=str).encode())
        self.ran.append(name)
        self.seconds[name] = seconds
        return result


def _digest(path: Path) -> str:
    return sha256_file(path) if Path(path).exists() else "missing"


def export_inputs(source: Path, model_options, preprocessing, source_sha: str | None = None) -> dict[str, Any]:
    """What the export stage's result depends on: the source's bytes (``source_sha``, from
    :func:`source_digest`, when already computed), the options, and the contents of a
    ``--model FILE.py:Class`` file (editing the class must redo the export)."""
    model = getattr(model_options, "model", None)
    model_file = _digest(Path(model.rpartition(":")[0])) if model else None
    return {"source": source_sha or _digest(source), "options": repr(model_options), "model_file": model_file, "pre": repr(preprocessing)}


def external_weights(source: Path) -> list[str]:
    """Relative paths (to ``source``'s folder) of the files an ONNX model keeps its weights in; [] when
    they are inside it. InputError for a location outside its folder (it could not be copied with it)."""
    import onnx

    from alexnet_deploy.onnx_file import load_onnx

    proto = load_onnx(source, load_weights=False)
    locations = set()
    for tensor in proto.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            location = next((entry.value for entry in tensor.external_data if entry.key == "location"), "")
            if not location or Path(location).is_absolute() or ".." in Path(location).parts:
                raise InputError(f"{source} keeps weights in {location!r}, which is not a file beside it.", "re-save the model with its weights inside (onnx.save without external data)")
            locations.add(location)
    return sorted(locations)


def source_digest(source: Path, external: list[str] = ()) -> str:
    """What the source model is: the sha256 of its bytes, folded with its external weight files' when it has any."""
    own = sha256_file(source)
    if not external:
        return own
    parts = [own] + [f"{location}:{_digest(Path(source).parent / location)}" for location in external]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _openvino_missing() -> str | None:
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        return "openvino is not installed (pip install 'alexnet-deploy[openvino]')"
    return None


def available_bf16() -> tuple[bool, str]:
    """(BF16 possible here, why not): OpenVINO installed and a CPU with native BF16 that OpenVINO offers."""
    missing = _openvino_missing()
    if missing:
        return False, missing
    import openvino

    from alexnet_deploy.runtimes.cpu import bf16_problem

    problem = bf16_problem(list(openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")))
    return (False, problem) if problem else (True, "")


def default_runtimes(target: str) -> tuple[list[str], list[str]]:
    """(runtimes to measure for ``target``, reasons for those left out): the CPU target uses
    onnxruntime and, where installed, OpenVINO (often the fastest INT8 path on a CPU)."""
    if target == "tensorrt":
        return ["trt"], []
    missing = _openvino_missing()
    return (["ort"], [f"openvino runtime left out: {missing}"]) if missing else (["ort", "openvino"], [])


# Runtimes `alexnet eval` runs (an ONNX file on the CPU).
EVAL_RUNTIMES = ("ort", "openvino", "openvino-bf16")


# The version of what an evaluation stage keeps; a cache written by another is redone. 3: image paths
# relative to --data (version 2 kept them absolute, so a moved --data folder resumed with its old paths).
EVALUATION_FIELDS = 3


def _evaluation(report, data: Path) -> dict[str, Any]:
    """What an evaluation stage caches: the scores and, per image, its prediction, truth and path relative to
    ``data``, as the stage's key holds the images by relative path, label and bytes (a moved folder resumes)."""
    return {"top1": report.top1, "top5": report.top5, "n": report.n, "predictions": report.predictions, "truths": report.truths,
            "paths": [os.path.relpath(path, data) for path in report.paths], "labels": report.labels}


def _located(evaluation: dict[str, Any], data: Path) -> dict[str, Any]:
    """``evaluation`` with its image paths under ``data`` as it is now."""
    return {**evaluation, "paths": [str(Path(data) / path) for path in evaluation["paths"]]}


def _copy(source: Path, target: Path) -> None:
    atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))


def _hard_link(existing: Path, target: Path) -> bool:
    """``target`` as a second name of ``existing`` (one file on disk when both goals pick the same
    variant: AlexNet files are 60-240 MB); False where the filesystem has no hard links."""
    staged = target.with_name(f".{target.name}.{os.getpid()}-link.tmp")
    try:
        staged.unlink(missing_ok=True)
        os.link(existing, staged)
        os.replace(staged, target)
        return True
    except OSError:
        staged.unlink(missing_ok=True)
        return False


def optimize(
    source: Path,
    data: Path,
    out_dir: Path | None = None,
    calib: Path | None = None,
    target: str = "cpu",
    runtimes: list[str] | None = None,
    batches: list[int] | None = None,
    max_drop: float = 1.0,
    model_options=None,
    preprocessing=None,
    timing=None,
    progress: ProgressLike = None,
    follow_links: bool = False,
) -> dict[str, Any]:
    """Run every stage (resuming finished ones) and return the report (also written to OUT_DIR).

    Links out of the image folders are not followed unless ``follow_links``. OUT_DIR is locked
    for the whole run: InputError naming the holder when another run has it."""
    from alexnet_deploy.onnx_file import check_input_file, file_kind

    progress = as_progress(progress)
    source = check_input_file(Path(source), "model")
    kind = file_kind(source)
    if kind not in ("onnx", "checkpoint"):
        raise InputError(f"{source} is neither a checkpoint nor an ONNX model.", "give the .pth/.pt you trained, or the FP32 .onnx from `alexnet export`")
    if target not in TARGETS:
        raise InputError(f"unknown target {target!r}.", f"use --target {'|'.join(TARGETS)}")
    if max_drop < 0:
        raise InputError(f"--max-drop {max_drop} must be >= 0 points.", "e.g. --max-drop 1.0")
    batches = sorted(set(batches or [1, 32]))
    left_out: list[str] = []
    if runtimes is None:
        runtimes, left_out = default_runtimes(target)
    runtimes = [r for r in runtimes if r != "openvino-bf16"]  # BF16 is its own variant (below)
    out = Path(out_dir) if out_dir is not None else source.with_name(f"{source.stem}-optimized")
    data = Path(data)
    from alexnet_deploy.datasets import open_image_set

    data_set = open_image_set(data, "data folder", follow_links)
    if not data_set.labelled:
        raise InputError(f"{data} is not an ImageFolder (one sub-folder of images per class).", "give labelled validation images: --data VAL_DIR")
    calib_set = open_image_set(Path(calib), "calibration folder", follow_links) if calib is not None else None
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a folder.", "choose another -o OUT_DIR")
    out.mkdir(parents=True, exist_ok=True)
    # One run per folder: two runs would overwrite each other's variants and resume each other's stages.
    with FolderLock(out, LOCK, "another `alexnet optimize` run", f"wait for it to finish, or write to another folder (-o OUT_DIR); {out / LOCK} names the holder"):
        # What the model and the images are, by content, hashed once per run (streamed): every
        # stage's key holds the source's digest, and those that read images the images' digest,
        # so swapped or edited bytes under the same names and sizes redo what depends on them.
        progress("hashing the source model")
        external = external_weights(source) if kind == "onnx" else []
        source_sha = source_digest(source, external)
        data_digest = data_set.content_digest(progress, "--data images")
        if calib_set is None:
            calib_digest = data_digest
        elif calib_set.root.resolve() == data_set.root.resolve():
            calib_digest = data_digest  # the same folder: hashed once
        else:
            calib_digest = calib_set.content_digest(progress, "--calib images")
        return _run(source, kind, external, source_sha, data, data_digest, calib, calib_digest, out, target, runtimes, left_out, batches, max_drop,
                    model_options, preprocessing, timing, progress, follow_links)


def _run(source, kind, external, source_sha, data, data_digest, calib, calib_digest, out, target, runtimes, left_out, batches, max_drop,
         model_options, preprocessing, timing, progress, follow_links) -> dict[str, Any]:
    """The stages of :func:`optimize`, with OUT_DIR locked and the inputs hashed."""
    stages = _Stages(out / STAGES)
    notes: list[str] = []
    skipped: list[dict[str, str]] = []
    fp32 = out / "model.onnx"

    def key(**inputs) -> dict[str, Any]:
        return {"source": source_sha, **inputs}  # the source model's bytes are in every stage's key

    # 1. Export + verify (checkpoint), or take the FP32 ONNX as given (its external weights, if any, inlined).
    def export() -> dict[str, Any]:
        if kind == "onnx" and external:
            import onnx

            from alexnet_deploy.onnx_file import load_onnx

            proto = load_onnx(source)  # the weights read from the files beside it
            if proto.ByteSize() >= 2**31:
                raise InputError(f"{source}'s weights ({proto.ByteSize() / 1e9:.1f} GB) do not fit in one ONNX file.", "optimize accepts models under 2 GB")
            atomic_write(fp32, lambda tmp: onnx.save(proto, str(tmp)))
            return {"files": [str(fp32)], "exported": False, "inlined": external}
        if kind == "onnx":
            _copy(source, fp32)
            return {"files": [str(fp32)], "exported": False}
        from alexnet_deploy.exporter.workflow import export_checkpoint

        outcome = export_checkpoint(source, fp32, model_options, preprocessing=preprocessing, verify=True, progress=progress)
        return {"files": [str(fp32)], "exported": True, "verification": outcome.verification.to_dict() if outcome.verification else None}

    progress("stage 1/5: export and verify" if kind == "checkpoint" else "stage 1/5: copying the FP32 model")
    exported = stages.run("export", export_inputs(source, model_options, preprocessing, source_sha), export, progress)
    fp32_digest = _digest(fp32)

    # 2. Variants.
    from alexnet_deploy.quantize.pipeline import quantize_model
    from alexnet_deploy.quantize.search import Budget

    variants: dict[str, Path] = {"fp32": fp32}
    progress("stage 2/5: FP16")
    fp16_path = out / "model.fp16.onnx"

    def make_fp16() -> dict[str, Any]:
        outcome = quantize_model(fp32, "fp16", fp16_path, target=target, holdout=data, measure_latency=False, progress=progress, follow_links=follow_links)
        return {"files": [str(fp16_path)], "comparison": outcome.comparison}

    stages.run("fp16", key(fp32=fp32_digest, data=data_digest, target=target), make_fp16, progress)
    variants["fp16"] = fp16_path

    progress("stage 2/5: accuracy-aware INT8")
    int8_path = out / ("model.int8-trt.onnx" if target == "tensorrt" else "model.int8.onnx")
    if calib is None:
        notes.append("no --calib: INT8 was calibrated on images drawn from --data, so its accuracy there is slightly optimistic")

    def make_int8() -> dict[str, Any]:
        outcome = quantize_model(fp32, "int8", int8_path, calib=calib or data, target=target, holdout=data, measure_latency=False,
                                 budget=Budget(max_drop=max_drop), progress=progress, follow_links=follow_links)
        return {"files": [str(int8_path)] if outcome.written else [], "written": outcome.written, "search": outcome.search, "comparison": outcome.comparison}

    int8 = stages.run("int8", key(fp32=fp32_digest, data=data_digest, calib=calib_digest, calib_given=calib is not None, target=target, max_drop=max_drop),
                      make_int8, progress)
    if int8["written"]:
        variants["int8"] = int8_path
    else:
        skipped.append({"variant": "int8", "reason": f"no INT8 recipe met the budget ({int8['search']['budget']['text']})"})
    notes += left_out
    if target == "cpu":
        ok, why = available_bf16()
        if not ok:
            skipped.append({"variant": "bf16", "reason": why})
        else:
            variants["bf16"] = variants["fp32"]
            notes.append("bf16 is the FP32 file run with OpenVINO's BF16 inference precision (openvino-bf16); it is evaluated and timed that way")

    # 3. Accuracy of every variant on every CPU runtime that runs it (evaluate.py, exactly what
    # `alexnet eval --runtime R` reports): OpenVINO's INT8 or BF16 kernels need not round as
    # onnxruntime's do. Runtimes eval cannot run (TensorRT) take the onnxruntime figures.
    from alexnet_deploy.evaluate import evaluate

    def variant_runtimes(name: str) -> list[str]:
        return ["openvino-bf16"] if name == "bf16" else runtimes  # BF16 is a run-time precision of the FP32 file

    evaluations: dict[tuple[str, str], dict[str, Any]] = {}
    for name, path in variants.items():
        for eval_runtime in dict.fromkeys([r for r in variant_runtimes(name) if r in EVAL_RUNTIMES] or ["ort"]):
            progress(f"stage 3/5: evaluating {name} on {eval_runtime}")

            def run_eval(path=path, eval_runtime=eval_runtime) -> dict[str, Any]:
                return _evaluation(evaluate(path, data, runtime=eval_runtime, batch=32, progress=progress, keep_predictions=True, follow_links=follow_links), data)

            suffix = "" if eval_runtime == "ort" else f"-{eval_runtime}"  # keeps the cache of runs made before OpenVINO was measured
            evaluations[(name, eval_runtime)] = _located(stages.run(f"eval-{name}{suffix}", key(file=_digest(path), data=data_digest, runtime=eval_runtime,
                                                                                              fields=EVALUATION_FIELDS), run_eval, progress), data)
    if ("fp32", "ort") not in evaluations:  # the budget is measured against FP32 on onnxruntime, the reference runtime
        evaluations[("fp32", "ort")] = _located(stages.run(
            "eval-fp32", key(file=_digest(variants["fp32"]), data=data_digest, runtime="ort", fields=EVALUATION_FIELDS),
            lambda: _evaluation(evaluate(variants["fp32"], data, runtime="ort", batch=32, progress=progress, keep_predictions=True, follow_links=follow_links), data),
            progress), data)

    # 4. Speed of every variant on every runtime of the target (the images play no part).
    from alexnet_deploy.bench.harness import TimingSettings
    from alexnet_deploy.bench.runner import run_bench

    timing = timing or TimingSettings()
    benches: dict[str, list[dict[str, Any]]] = {}
    for name, path in variants.items():
        progress(f"stage 4/5: benchmarking {name}")

        def run_speed(path=path, name=name) -> dict[str, Any]:
            wanted = variant_runtimes(name)
            try:
                report = run_bench([path], wanted, batches, timing)
            except AlexnetError as exc:
                return {"results": [], "skipped": [{"runtime": ",".join(wanted), "reason": exc.problem}]}
            return {"results": report.results, "skipped": report.skipped}

        speed = stages.run(f"bench-{name}", key(file=_digest(path), runtimes=variant_runtimes(name), batches=batches, timing=repr(timing)), run_speed, progress)
        benches[name] = speed["results"]
        skipped += [{"variant": name, "runtime": s.get("runtime", ""), "reason": s["reason"]} for s in speed["skipped"]]

    # 5. Report and recommendation.
    progress("stage 5/5: report and recommendation")
    started = time.perf_counter()
    report = _report(source, out, target, runtimes, batches, max_drop, variants, evaluations, benches, int8, exported, skipped, notes)
    report["stages"] = {"ran": stages.ran, "resumed": stages.resumed, "seconds": stages.seconds}
    _write_outputs(out, report)
    report["stages"]["seconds"]["report"] = time.perf_counter() - started
    atomic_write_bytes(out / "report.json", (json.dumps(report, indent=2, default=str) + "\n").encode())
    return report


def _report(source, out, target, runtimes, batches, max_drop, variants, evaluations, benches, int8, exported, skipped, notes) -> dict[str, Any]:
    import numpy as np

    from alexnet_deploy.verify.paired import accuracy_change, budget_verdict, changed_images, flip_rate

    fp32_eval = evaluations[("fp32", "ort")]
    reference = np.asarray(fp32_eval["predictions"])
    truth = np.asarray(fp32_eval["truths"])
    fp32_top1 = fp32_eval["top1"]
    largest = max(batches)
    rows = []
    for name, path in variants.items():
        results = benches[name]
        for runtime in dict.fromkeys(r["runtime"] for r in results) or [None]:
            evaluation = evaluations.get((name, runtime)) or evaluations.get((name, "ort")) or next(v for (n, _), v in evaluations.items() if n == name)
            predicted = np.asarray(evaluation["predictions"])
            agreement = float((predicted == reference).mean())
            drop = 100 * (fp32_top1 - evaluation["top1"])
            change = accuracy_change(reference == truth, predicted == truth)
            flips = flip_rate(reference, predicted)
            if evaluation is fp32_eval:  # the reference itself: no uncertainty about comparing it with itself
                change = {**change, "ci_points": [0.0, 0.0]}
            mine = [r for r in results if r["runtime"] == runtime]
            latency = next((r["latency_ms"]["p50"] for r in mine if r["batch"] == 1), None)
            through = next((r["throughput_ips"] for r in mine if r["batch"] == largest), None)
            rows.append({
                "variant": name, "file": str(path), "runtime": runtime,
                "top1": evaluation["top1"], "top5": evaluation["top5"], "agreement": agreement, "drop_points": drop,
                "within_budget": drop <= max_drop + 1e-9, "latency_b1_ms": latency, f"throughput_b{largest}_ips": through,
                "throughput_ips": through, "throughput_batch": largest, "bytes": Path(path).stat().st_size, "images": evaluation["n"],
                "drop_ci_points": change["ci_points"], "mcnemar_p": change["mcnemar_p"], "budget_verdict": budget_verdict(change, max_drop),
                "flip_rate": flips["rate"], "flip_rate_ci": flips["ci"], "changed_count": flips["count"],
                "changed_images": changed_images(fp32_eval["paths"], reference, predicted, fp32_eval["labels"], truth),
            })
    within = [r for r in rows if r["within_budget"] and r["runtime"]]
    best_latency = min((r for r in within if r["latency_b1_ms"] is not None), key=lambda r: r["latency_b1_ms"], default=None)
    best_throughput = max((r for r in within if r["throughput_ips"] is not None), key=lambda r: r["throughput_ips"], default=None)
    recommendation = {}
    for goal, row in (("latency", best_latency), ("throughput", best_throughput)):
        if row is not None:
            recommendation[goal] = {"variant": row["variant"], "runtime": row["runtime"], "file": str(out / f"best-{goal}.onnx"), "from": row["file"],
                                    "latency_b1_ms": row["latency_b1_ms"], "throughput_ips": row["throughput_ips"], "top1": row["top1"]}
    return {
        "source": str(source), "out_dir": str(out), "target": target, "runtimes": runtimes, "batches": batches,
        "budget": {"max_drop_points": max_drop, "fp32_top1": fp32_top1, "images": evaluations[("fp32", "ort")]["n"], "reference": "fp32 on ort"},
        "exported": exported.get("exported"), "rows": rows, "recommendation": recommendation,
        "int8_search": int8.get("search"), "skipped": skipped, "notes": notes,
    }


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def report_table(report: dict[str, Any]) -> tuple[list[tuple[str, str]], list[list[str]]]:
    """(columns as (name, justify), cells): the variant x runtime table of report.md and of the terminal."""
    largest = max(report["batches"])
    columns = [("variant", "left"), ("runtime", "left"), ("top-1", "right"), ("drop, 95% CI (points)", "right"), ("top-5", "right"), ("top-1 changed", "right"),
               ("latency b1 (ms)", "right"), (f"throughput b{largest} (img/s)", "right"), ("size (MB)", "right"), ("within budget", "center")]
    verdicts = {"within": "yes", "uncertain": "yes, uncertain", "over": "no"}
    cells = [[r["variant"], r["runtime"] or "-", f"{100 * r['top1']:.2f}%", _drop_text(r), f"{100 * r['top5']:.2f}%", f"{100 * r['flip_rate']:.2f}%",
              _fmt(r["latency_b1_ms"], ".2f"), _fmt(r["throughput_ips"], ".1f"), f"{r['bytes'] / 1e6:.1f}", verdicts[r["budget_verdict"]]]
             for r in report["rows"]]
    return columns, cells


def _drop_text(row: dict[str, Any]) -> str:
    """'0.40 (-0.20..1.00)': the top-1 drop under FP32 and its paired interval, in points (never '-0.00')."""
    def points(value: float) -> str:
        return f"{value:.2f}" if round(value, 2) != 0 else "0.00"

    low, high = row["drop_ci_points"]
    return f"{points(row['drop_points'])} ({points(low)}..{points(high)})"


def report_sections(report: dict[str, Any]) -> list[tuple[str, list[str], bool]]:
    """(title, lines, verbatim) after the table: recommendation, INT8 search log, skipped, notes."""
    largest = max(report["batches"])
    recommendation = []
    for goal in ("latency", "throughput"):
        rec = report["recommendation"].get(goal)
        if rec is None:
            recommendation.append(f"{goal}: no variant within the budget could be measured")
        else:
            recommendation.append(f"best {goal}: {Path(rec['file']).name} = {rec['variant']} ({Path(rec['from']).name}) on {rec['runtime']}"
                                  f" ({_fmt(rec['latency_b1_ms'], '.2f')} ms at batch 1, {_fmt(rec['throughput_ips'], '.1f')} img/s at batch {largest}, top-1 {100 * rec['top1']:.2f}%)")
    sections = [("Recommendation", recommendation, False)]
    search = report.get("int8_search")
    if search:
        from alexnet_deploy.quantize.search import log_lines

        sections.append((f"INT8 search ({search['budget']['text']}: {'met' if search['met'] else 'missed'})", log_lines(search["log"]), True))
    changed = [(r, r["changed_images"][:5]) for r in report["rows"] if r.get("changed_images")]
    if changed:
        lines = []
        for r, examples in changed:
            shown = "; ".join(f"{Path(c['image']).name}: {c['reference']} -> {c['candidate']} (truth {c['truth']})" for c in examples)
            lines.append(f"{r['variant']} on {r['runtime']}: {r['changed_count']} image(s), e.g. {shown}")
        sections.append(("Images whose top-1 changed (report.json: changed_images, up to 100 per row)", lines, False))
    if report["skipped"]:
        sections.append(("Skipped", [f"{s['variant']}{' ' + s['runtime'] if s.get('runtime') else ''}: {s['reason']}" for s in report["skipped"]], False))
    if report["notes"]:
        sections.append(("Notes", list(report["notes"]), False))
    return sections


def report_heading(report: dict[str, Any]) -> tuple[str, str]:
    """(title, the line under it) of report.md and of the terminal view."""
    largest = max(report["batches"])
    return (f"Which file to ship: the {report['target']} variants of {Path(report['source']).name}",
            f"Accuracy on {report['budget']['images']} images; budget: top-1 at most {report['budget']['max_drop_points']:g} points under FP32 "
            f"({100 * report['budget']['fp32_top1']:.2f}%), \"uncertain\" when the drop's 95% interval (paired, the same images) reaches past it. "
            f"Top-1 changed: images whose top-1 differs from FP32's. Latency: median at batch 1; throughput at batch {largest}.")


def markdown(report: dict[str, Any]) -> str:
    """report.md: the variant x runtime table and the recommendation."""
    title, intro = report_heading(report)
    columns, cells = report_table(report)
    align = {"left": "---", "right": "---:", "center": ":---:"}
    lines = [f"# {title}", "", intro, "", "| " + " | ".join(name for name, _ in columns) + " |", "|" + "|".join(align[j] for _, j in columns) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    for heading, body, verbatim in report_sections(report):
        lines += ["", f"## {heading}", ""] + (["```", *body, "```"] if verbatim else [f"- {line}" for line in body])
    return "\n".join(lines) + "\n"


def _write_outputs(out: Path, report: dict[str, Any]) -> None:
    written: dict[str, Path] = {}  # source file -> its best-*.onnx already written
    for goal, rec in report["recommendation"].items():
        target = out / f"best-{goal}.onnx"
        twin = written.get(rec["from"])
        if twin is None or not _hard_link(twin, target):
            _copy(Path(rec["from"]), target)  # a copy of the variant: survives moving or cleaning OUT_DIR
        written.setdefault(rec["from"], target)
    for goal in ("latency", "throughput"):
        stale = out / f"best-{goal}.onnx"
        if goal not in report["recommendation"] and stale.exists():
            stale.unlink()
    atomic_write_bytes(out / "report.md", markdown(report).encode())
    pareto_png(report, out / "pareto.png")


def pareto_png(report: dict[str, Any], path: Path) -> Path:
    """Two panels: top-1 against latency (batch 1) and against throughput; the recommended points ringed."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    panel_w, panel_h, margin = 420, 320, 56
    image = Image.new("RGB", (2 * panel_w + 3 * margin, panel_h + 2 * margin + 20), "white")
    draw = ImageDraw.Draw(image)
    rows = [r for r in report["rows"] if r["runtime"]]
    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]
    tops = [100 * r["top1"] for r in rows] or [0.0]
    y_lo, y_hi = min(tops) - 1, max(tops) + 1
    largest = max(report["batches"])
    draw.text((margin, 8), f"top-1 vs speed (budget: {report['budget']['max_drop_points']:g} points under FP32); ringed: recommended", fill="black", font=font)
    for panel, (key, goal, label) in enumerate((("latency_b1_ms", "latency", "latency at batch 1 (ms), lower is better"),
                                                ("throughput_ips", "throughput", f"throughput at batch {largest} (img/s), higher is better"))):
        left, top = margin + panel * (panel_w + margin), margin
        draw.rectangle((left, top, left + panel_w, top + panel_h), outline="black")
        draw.text((left, top + panel_h + 8), label, fill="black", font=font)
        points = [(r[key], 100 * r["top1"], r) for r in rows if r[key] is not None]
        if not points:
            draw.text((left + 10, top + 10), "nothing measured", fill="black", font=font)
            continue
        x_lo, x_hi = 0.0, max(p[0] for p in points) * 1.15
        for frac in (0.0, 0.5, 1.0):
            draw.text((left + frac * panel_w - 10, top + panel_h + 20), f"{x_lo + frac * (x_hi - x_lo):.3g}", fill="gray", font=font)
            draw.text((left - 50, top + (1 - frac) * panel_h - 6), f"{y_lo + frac * (y_hi - y_lo):.1f}%", fill="gray", font=font)
        budget_y = 100 * report["budget"]["fp32_top1"] - report["budget"]["max_drop_points"]
        if y_lo <= budget_y <= y_hi:
            y = top + (1 - (budget_y - y_lo) / (y_hi - y_lo)) * panel_h
            draw.line((left, y, left + panel_w, y), fill=(200, 200, 200), width=1)
        chosen = report["recommendation"].get(goal)
        anchors, labels = [], []
        for index, (x_value, y_value, row) in enumerate(points):
            x = left + (x_value - x_lo) / (x_hi - x_lo) * panel_w
            y = top + (1 - (y_value - y_lo) / (y_hi - y_lo)) * panel_h
            colour = colours[index % len(colours)]
            draw.ellipse((x - 5, y - 5, x + 5, y + 5), fill=colour)
            if chosen and row["file"] == chosen["from"] and row["runtime"] == chosen["runtime"] and row["variant"] == chosen["variant"]:
                draw.ellipse((x - 10, y - 10, x + 10, y + 10), outline="red", width=2)
            anchors.append((x, y))
            labels.append((f"{row['variant']}/{row['runtime']}", colour))
        sizes = [(int(font.getlength(text)), 12) for text, _ in labels]
        for (text, colour), (lx, ly) in zip(labels, place_labels(anchors, sizes, (left + 2, top + 2, left + panel_w - 2, top + panel_h - 2))):
            draw.text((lx, ly), text, fill=colour, font=font)
    return atomic_write(Path(path), lambda tmp: image.save(tmp, format="PNG"))


def place_labels(anchors: list[tuple[float, float]], sizes: list[tuple[int, int]], bounds=None) -> list[tuple[float, float]]:
    """Top-left corners for labels of ``sizes`` next to points at ``anchors``, none overlapping another
    label or any point, and inside ``bounds`` (x0, y0, x1, y1) where there is room: the first free
    spot of a ring of candidates around each point, farther out when the near ones are taken
    (points close together used to print their labels on each other)."""
    taken = [(x - 6, y - 6, x + 6, y + 6) for x, y in anchors]  # the dots themselves
    placed = []

    def free(box) -> bool:
        inside = bounds is None or (box[0] >= bounds[0] and box[1] >= bounds[1] and box[2] <= bounds[2] and box[3] <= bounds[3])
        return inside and all(box[2] <= o[0] or box[0] >= o[2] or box[3] <= o[1] or box[1] >= o[3] for o in taken)

    for (x, y), (width, height) in zip(anchors, sizes):
        spot = None
        for reach in range(40):  # rows of labels above and below the point, right of it first
            shift = reach * (height + 2)
            for dx, dy in ((8, -height - 2 - shift), (8, 4 + shift), (-8 - width, -height - 2 - shift), (-8 - width, 4 + shift)):
                box = (x + dx, y + dy, x + dx + width, y + dy + height)
                if free(box):
                    spot = box
                    break
            if spot:
                break
        spot = spot or (x + 8, y - height - 2, x + 8 + width, y - 2)
        taken.append(spot)
        placed.append((spot[0], spot[1]))
    return placed
