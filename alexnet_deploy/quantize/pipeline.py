"""``alexnet quantize`` end to end: plan the images, transform the graph, compare with FP32, write.

The output is written only after it passed onnx.checker and produced finite logits; its
metadata records precision, recipe, target and calibration (method, image count, a hash
of the file list). Every run ends with a comparison against the FP32 source on images
not used for calibration.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from alexnet_deploy.verify.metrics import compare_logits
from alexnet_deploy.verify.paired import budget_verdict, signed
from alexnet_deploy.datasets import ImageSet, class_index_map, open_image_set, split_indices, synthetic_images
from alexnet_deploy.errors import CheckFailed, InputError
from alexnet_deploy.record import ModelRecord, read_record, write_record
from alexnet_deploy.fileio import atomic_write_bytes, check_writable, sha256_file
from alexnet_deploy.onnx_file import fixed_batch, load_onnx
from alexnet_deploy.quantize.recipes import METHODS, PRECISIONS, RECIPES, TARGETS
from alexnet_deploy.quantize.search import Budget, SearchInterrupted, SearchResult
from alexnet_deploy.record import graph_precision
from alexnet_deploy.image_stream import DEFAULT_AHEAD, ImageStream
from alexnet_deploy.preprocess import load_images, preprocess_image
from alexnet_deploy.progress import ProgressLike, as_progress
from alexnet_deploy.runtimes.ort import OrtRuntime

DEFAULT_CALIB_SAMPLES = 256
DEFAULT_HOLDOUT_SAMPLES = 500
SYNTHETIC_HOLDOUT = 64
AGREEMENT_WARNING = 0.99
CALIB_BATCH = 8


@dataclass
class QuantizeOutcome:
    """What ``quantize_model`` wrote and how the result compares with its FP32 source."""

    output: Path
    source: Path
    precision: str
    target: str
    recipe: str
    calibration: dict[str, Any] | None
    comparison: dict[str, Any]
    sizes: dict[str, Any]
    latency: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    written: bool = True  # False: the INT8 budget was missed and nothing was written
    search: dict[str, Any] | None = None  # INT8: the budget, whether it was met, the chosen recipe and the search log

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["output"], data["source"] = str(self.output), str(self.source)
        return data


class QuantizeInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``quantize_model`` for static INT8. ``what_was_left`` says what is on disk now (the CLI
    prints it, exit 130); ``written`` is the output when the best candidate within the budget was written,
    else None; ``step`` that candidate's step in the search log; ``steps`` the steps the search took."""

    def __init__(self, what_was_left: str, written: Path | None = None, step: int | None = None, steps: int = 0):
        super().__init__(what_was_left)
        self.what_was_left, self.written, self.step, self.steps = what_was_left, written, step, steps


def search_trail(output: Path) -> Path:
    """Where the INT8 search records every point it tried while it runs: ``OUTPUT.search.json``."""
    return output.with_name(output.name + ".search.json")


def default_output(source: Path, precision: str, target: str) -> Path:
    """``model.onnx`` -> ``model.fp16.onnx``, ``model.int8.onnx``, ``model.int8-trt.onnx``, ``model.int8-dynamic.onnx``."""
    tag = "int8-trt" if precision == "int8" and target == "tensorrt" else precision
    return source.with_name(f"{source.stem}.{tag}.onnx")


def _check_options(precision: str, target: str, method: str | None, calib, calib_samples: int | None) -> None:
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}.", f"use --precision {'|'.join(PRECISIONS)}")
    if target not in TARGETS:
        raise InputError(f"unknown target {target!r}.", f"use --target {'|'.join(TARGETS)}")
    if method is not None and method not in METHODS:
        raise InputError(f"unknown calibration method {method!r}.", f"use --method {'|'.join(METHODS)}")
    if precision != "int8" and method is not None:
        raise InputError(f"--method applies to static int8 only, not {precision}.", "drop --method, or use --precision int8")
    if precision != "int8" and calib_samples is not None:
        raise InputError(f"--calib-samples applies to static int8 only, not {precision}.", "drop --calib-samples, or use --precision int8")
    if calib_samples is not None and calib_samples < 1:
        raise InputError(f"--calib-samples {calib_samples} must be at least 1.", "e.g. --calib-samples 256")
    if precision == "int8-dynamic" and target == "tensorrt":
        raise InputError("int8-dynamic is an onnxruntime recipe; TensorRT has no dynamic quantization.", "use --precision int8 --target tensorrt (static Q/DQ)")
    if precision == "int8" and calib is None:
        raise InputError(
            "int8 needs representative images to calibrate on.",
            "add --calib DIR (a few hundred training or validation images), or --calib synthetic to accept unknown accuracy",
        )


@dataclass
class _Images:
    """Preprocessed images with provenance."""

    batch: np.ndarray
    description: str
    targets: list[int] | None = None  # folder class index per row
    classes: list[str] | None = None
    used: ImageSet | None = None
    skipped: int = 0


def _preprocess_set(images: ImageSet, record: ModelRecord, what: str, progress) -> _Images:
    progress.start(f"preprocessing {len(images.paths)} {what} images", len(images.paths))
    batch, used_paths, skipped = load_images(images.paths, record.preprocessing, progress.advance)
    if not used_paths:
        raise InputError(
            f"none of the {len(images.paths)} image files under {images.root} could be decoded.",
            "point it at a folder of readable .jpg/.png images",
        )
    keep = set(used_paths)
    used = images.subset([i for i, path in enumerate(images.paths) if path in keep])
    return _Images(batch, f"{len(used_paths)} {what} images from {images.root}", used.targets, used.classes, used, len(skipped))


def _synthetic(count: int, record: ModelRecord, seed: int, what: str) -> _Images:
    batch = np.stack([preprocess_image(img, record.preprocessing) for img in synthetic_images(count, seed)])
    return _Images(batch, f"{count} synthetic {what} images")


class CalibrationImages:
    """The planned calibration images, decoded and preprocessed only as they are fed.

    Holding every preprocessed image at once would grow with the image count (0.6 MB each
    at 224 px); this keeps one batch at a time. It counts what it actually decodes, so the
    report says how many images the ranges came from, not how many were asked for.
    """

    def __init__(self, spec, images: ImageSet | None = None, synthetic: tuple[int, int] | None = None):
        self.spec, self.images = spec, images
        self._synthetic = synthetic_images(*synthetic) if synthetic is not None else None  # small PIL images
        self.count = len(images.paths) if images is not None else len(self._synthetic)
        self.undecodable: set[int] = set()

    def __len__(self) -> int:
        return self.count

    def batches(self, batch: int, order=None, ahead: int = DEFAULT_AHEAD):
        """Lists of at most ``batch`` (index, CHW float32 array) pairs, undecodable files left out.

        Decoded on a thread pool, up to ``ahead`` batches ahead of the consumer (image_stream.ImageStream).
        """
        indices = list(range(self.count)) if order is None else list(order)
        if self._synthetic is not None:
            sources = [self._synthetic[i] for i in indices]
        else:
            sources = [self.images.paths[i] for i in indices]
        for chunk in ImageStream(sources, self.spec, batch=batch, ahead=ahead):
            self.undecodable.update(indices[position] for position, _ in chunk.skipped)
            if chunk.indices:
                yield [(indices[position], array) for position, array in zip(chunk.indices, chunk.array)]

    def describe(self, used: list[int]) -> dict[str, Any]:
        """The report's calibration entry for the images the ranges came from (``used``: their indices)."""
        folder = self.images.subset(sorted(set(used))) if self.images is not None else None
        return {
            "images": len(set(used)),  # counted as fed to the calibrator
            "skipped": len(self.undecodable),
            "source": "synthetic" if folder is None else "folder",
            "files_sha256": folder.digest() if folder is not None else None,
        }


def plan_images(precision, calib, holdout, calib_samples, holdout_samples, record, progress=None, seed=0, follow_links: bool = False) -> tuple[CalibrationImages | None, _Images, list[str]]:
    """(calibration images (not yet decoded) or None, comparison images, notes) for a quantize run.

    Held-out images are a seeded random draw from the images not used for calibration,
    so every class keeps its share.
    """
    progress = as_progress(progress)
    notes: list[str] = []
    calibration = None
    held_set = open_image_set(Path(holdout), "held-out folder", follow_links) if holdout is not None else None
    synthetic = calib is not None and str(calib) == "synthetic"
    calib_set = None if calib is None or synthetic else open_image_set(Path(calib), "calibration folder", follow_links)

    if precision == "int8":
        if synthetic:
            calibration = CalibrationImages(record.preprocessing, synthetic=(calib_samples, seed))
        else:
            total = len(calib_set.paths)
            if held_set is None and total > 1:
                # Keep images back for the comparison: the rest after calib_samples, or a fifth.
                count = calib_samples if total > calib_samples else max(1, total - max(1, total // 5))
                chosen, rest = split_indices(total, count, seed)
                held_set = calib_set.subset(rest) if rest else None  # trimmed to holdout_samples at random below
                calib_set = calib_set.subset(chosen)
            elif total > calib_samples:
                calib_set = calib_set.subset(split_indices(total, calib_samples, seed)[0])
            calibration = CalibrationImages(record.preprocessing, calib_set)
    elif calib_set is not None and held_set is None:
        held_set = calib_set  # nothing to calibrate: the folder serves the comparison
    elif calib is not None:
        notes.append(f"{precision} needs no calibration; --calib {calib} was ignored")

    if held_set is not None:
        if len(held_set.paths) > holdout_samples:
            held_set = held_set.subset(split_indices(len(held_set.paths), holdout_samples, seed + 1)[0])
        compared = _preprocess_set(held_set, record, "held-out", progress)
    elif calibration is not None and calibration.images is not None:
        notes.append("the calibration folder has a single image; the comparison reuses it (not held out)")
        compared = _preprocess_set(calibration.images, record, "calibration", progress)
    else:
        progress("drawing synthetic comparison images")
        compared = _synthetic(SYNTHETIC_HOLDOUT, record, seed + 1, "comparison")
        notes.append("no images given: compared on synthetic images, so agreement says little about real accuracy; add --holdout DIR")
    return calibration, compared, notes


def _convert(source: Path, proto, precision: str, target: str, method: str, calibration: CalibrationImages | None, progress):
    """(converted ModelProto, the calibration entry of the report or None)."""
    from alexnet_deploy.quantize import recipes

    if precision == "fp16":
        progress("converting to float16")
        return recipes.to_fp16(proto), None
    if precision == "int8-dynamic":
        progress("quantizing Gemm/MatMul weights")
        return recipes.quantize_dynamic_int8(source), None
    fixed = fixed_batch(proto)
    # onnxruntime's histogram calibrators stack the batches of one call, so they must be equal: use 1.
    batch = fixed or (CALIB_BATCH if method == "minmax" else 1)
    quantized, used = recipes.quantize_static_int8(source, calibration, target, method, proto.graph.input[0].name, batch, fixed is not None, progress)
    if not used:
        where = calibration.images.root if calibration.images is not None else "the calibration set"
        raise InputError(f"none of the {calibration.count} image files under {where} could be decoded.", "point it at a folder of readable .jpg/.png images")
    return quantized, {"method": method, **calibration.describe(used)}


def _truth(images: _Images, labels, notes: list[str]) -> np.ndarray | None:
    """Model class index of every comparison image, or None (unlabelled, or classes that do not match)."""
    if images.targets is None:
        return None
    try:
        mapping, _ = class_index_map(images.classes, labels)
    except InputError as exc:
        notes.append(f"accuracy not computed: {exc.problem}")
        return None
    return np.asarray([mapping[t] for t in images.targets])


def _changes(reference: np.ndarray, candidate: np.ndarray, truth: np.ndarray | None, compared: _Images, labels) -> dict[str, Any]:
    """The flip rate, the accuracy change with its paired interval (with labels), and the images whose top-1 changed."""
    from alexnet_deploy.verify.paired import accuracy_change, changed_images, flip_rate

    ref_top1, cand_top1 = reference.argmax(1), candidate.argmax(1)
    names = compared.used.paths if compared.used is not None else [f"synthetic image {i}" for i in range(len(ref_top1))]
    result = {"flip_rate": flip_rate(ref_top1, cand_top1), "changed_count": int((ref_top1 != cand_top1).sum()),
              "changed_images": changed_images(names, ref_top1, cand_top1, labels, truth)}
    if truth is not None:
        result["accuracy_change"] = accuracy_change(ref_top1 == truth, cand_top1 == truth)
    return result


def _accuracy(logits: np.ndarray, truth: np.ndarray | None) -> float | None:
    return None if truth is None else float((logits.argmax(axis=1) == truth).mean())


def latency_comparison(fp32: OrtRuntime, other: OrtRuntime, sample: np.ndarray, batches=(1, 32), rounds: int = 3) -> dict[str, Any]:
    """Median latency of both models at each batch they accept, measured round-robin so drift hits both."""
    from alexnet_deploy.timing import round_robin_medians

    info = fp32.info()
    if info.max_batch is not None:
        batches = (info.max_batch,)  # a fixed-batch model runs at that batch only
    result = {}
    for size in batches:
        batch = np.resize(sample, (size,) + sample.shape[1:])  # repeats images when there are fewer than `size`
        medians = round_robin_medians({"fp32": lambda: fp32.run(batch), "other": lambda: other.run(batch)}, rounds=rounds, min_runs=max(1, 8 // size) + 1)
        fp32_ms, other_ms = 1000 * float(np.median(medians["fp32"])), 1000 * float(np.median(medians["other"]))
        result[f"batch_{size}"] = {"fp32_ms": fp32_ms, "ms": other_ms, "speedup": fp32_ms / other_ms if other_ms > 0 else None}
    return result


def _quantization_entry(precision: str, target: str, source: Path, calib_info, search_recipe) -> dict[str, Any]:
    """The output's ``details.quantization`` (without ``measured``)."""
    entry = {"precision": precision, "recipe": RECIPES[(precision, target)], "target": target, "source_onnx_sha256": sha256_file(source), "calibration": calib_info}
    if search_recipe is not None:
        entry["search"] = search_recipe
    return entry


def _candidate_text(kept: SearchResult) -> str:
    """``step 5: equalized, minmax, 1 layer(s) in float; top-1 81.2% (-0.4 points)`` for a search candidate."""
    recipe, measured = kept.recipe, kept.recipe["measured"]
    floats = f", {len(recipe['float_layers'])} layer(s) in float" if recipe["float_layers"] else ""
    if measured.get("accuracy") is not None:
        what = f"top-1 {measured['accuracy']:.1%} ({signed(-measured['drop_points'])} points)"
    else:
        what = f"top-1 agreement with FP32 {measured['top1_agreement']:.1%}"
    return f"step {kept.step}: {recipe['graph']}, {recipe['method']}{floats}; {what}"


def _keep_interrupted(kept: SearchResult | None, log: list, finished: bool, *, output: Path, source: Path, record: ModelRecord, precision: str,
                      target: str, budget: Budget, truth, compared: _Images, fp32_logits, allow_drop: bool) -> QuantizeInterrupted:
    """Ctrl-C during static INT8: write the best candidate as ``output`` when it is within the budget (atomically, with
    the record a finished run gives it; ``measured`` from the search's own run on the held-out images, latency not
    measured), mark ``OUTPUT.search.json`` interrupted, and return the exception that says what is on disk.

    Nothing outside the budget is written, not even with ``allow_drop`` (that asks for the best of a finished
    search), so an existing ``output`` is replaced only by a file a finished run would also have written.
    """
    import onnx

    trail = search_trail(output)
    steps = len(log)
    written = None
    within = kept is not None and kept.met and kept.logits is not None and fp32_logits is not None and bool(np.isfinite(kept.logits).all())
    if within:
        summary = compare_logits(kept.logits, fp32_logits).summary()
        quantization = _quantization_entry(precision, target, source, kept.calibration, {k: v for k, v in kept.recipe.items() if k != "measured"})
        quantization["measured"] = {"images": len(compared.batch), "accuracy": _accuracy(kept.logits, truth), "accuracy_fp32": _accuracy(fp32_logits, truth),
                                    "top1_agreement": summary["top1_agreement"], "top5_agreement": summary["top5_agreement"], "latency": {}}
        write_record(kept.proto, replace(record, precision=precision, details={**record.details, "quantization": quantization}))
        data = kept.proto.SerializeToString()
        try:
            onnx.checker.check_model(data)
        except Exception:  # as in a finished run, a file that fails the checker is not written
            pass
        else:
            atomic_write_bytes(output, data)
            written = output
    best = None if kept is None else {"step": kept.step, "graph": kept.recipe["graph"], "method": kept.recipe["method"],
                                      "float_layers": kept.recipe["float_layers"], "measured": kept.recipe["measured"]}
    atomic_write_bytes(trail, json.dumps({"budget": budget.to_dict(truth is not None), "best": best, "log": log, "interrupted": True,
                                          "search_finished": finished, "written": None if written is None else str(written),
                                          "written_step": None if written is None else kept.step}, indent=1, default=str).encode())
    where = f"interrupted after {steps} step(s) of the INT8 search" + (" (it had finished)" if finished else "")
    if written is not None:
        return QuantizeInterrupted(
            f"{where}; the best file within the budget ({budget.describe(truth is not None)}) so far was written to {output} ({_candidate_text(kept)}; "
            f"latency not measured); {trail} lists every point tried.", written, kept.step, steps)
    left = f"; {output} is left as it was" if output.exists() else ""
    if kept is None:
        return QuantizeInterrupted(f"interrupted before the INT8 search measured any candidate, so nothing was written{left}; {trail} says so.", None, None, steps)
    why = ("the candidate within the budget failed its checks" if kept.met else
           "no candidate was within the budget" + ("" if finished else " yet"))
    also = " (--allow-drop writes a file outside the budget only when the run completes)" if allow_drop and not kept.met else ""
    return QuantizeInterrupted(f"{where}; {why} ({budget.describe(truth is not None)}; best so far {_candidate_text(kept)}), so nothing was written{also}{left}; "
                               f"{trail} lists every point tried.", None, None, steps)


def quantize_model(
    source: Path,
    precision: str,
    output: Path | None = None,
    calib: Path | str | None = None,
    calib_samples: int | None = None,
    method: str | None = None,
    target: str = "cpu",
    holdout: Path | None = None,
    holdout_samples: int = DEFAULT_HOLDOUT_SAMPLES,
    measure_latency: bool = True,
    progress: ProgressLike = None,
    budget: Budget | None = None,
    search: bool = True,
    allow_drop: bool = False,
    follow_links: bool = False,
) -> QuantizeOutcome:
    """Write an FP16/INT8 variant of the FP32 ONNX model at ``source`` and compare it with the source.

    Static INT8 is accuracy-aware: with ``search`` it tries calibration methods,
    cross-layer equalization (+ bias correction) and keeping the most sensitive layers in
    float until ``budget`` holds on the held-out images (search.py). When no candidate is
    within the budget, nothing is written (``outcome.written`` is False) unless
    ``allow_drop``. Raises InputError (nothing written) for unusable inputs and CheckFailed
    when the result does not load or gives non-finite logits. FP16 and dynamic INT8 keep a
    warning below 99% agreement. Links out of the image folders are not followed unless
    ``follow_links``. A KeyboardInterrupt during static INT8 becomes QuantizeInterrupted, after
    the candidate the search would return within the budget, if one was measured, is written.
    """
    import onnx

    progress = as_progress(progress)
    _check_options(precision, target, method, calib, calib_samples)
    budget = budget or Budget()
    if budget.max_drop < 0 or not 0 <= budget.min_agreement <= 100:
        raise InputError("--max-drop must be >= 0 points and --min-agreement between 0 and 100 (%).", "e.g. --max-drop 1.0 or --min-agreement 99")
    source = Path(source)
    proto = load_onnx(source)
    record = read_record(proto, str(source))
    already = record.precision if record.precision != "fp32" else graph_precision(proto)
    if already:
        raise InputError(f"{source} is already {already}; quantizing it again would compound the error.", "quantize the FP32 model that `alexnet export` wrote")
    output = Path(output) if output is not None else default_output(source, precision, target)
    if output.suffix.lower() != ".onnx":
        raise InputError(f"output {output} does not end in .onnx.", "name the output file *.onnx")
    if output.resolve() == source.resolve():
        raise InputError("the output would overwrite the FP32 source.", "choose another -o path")
    check_writable(output)
    if precision == "int8":  # the search's running log goes beside the output: a name the disk takes, before any work
        check_writable(search_trail(output), "INT8 search log")
    if holdout_samples < 1:
        raise InputError(f"--holdout-samples {holdout_samples} must be at least 1.", "e.g. --holdout-samples 500")
    method = method or "minmax"
    calibration, compared, notes = plan_images(precision, calib, holdout, calib_samples or DEFAULT_CALIB_SAMPLES, holdout_samples, record, progress,
                                               follow_links=follow_links)
    truth = _truth(compared, record.labels, notes)

    searched = None
    fp32_logits = None
    result = None  # the INT8 search's choice, once it has made one
    try:
        if precision == "int8":
            from alexnet_deploy.quantize.search import search_int8

            progress.start(f"running FP32 on {len(compared.batch)} held-out images", len(compared.batch))
            with OrtRuntime(source) as fp32_rt:
                fp32_logits = fp32_rt.run_all(compared.batch, 32, progress.advance)
            fixed = fixed_batch(proto)
            trail = search_trail(output)

            def keep_trail(log, best) -> None:  # every point tried, on disk as it goes: an interrupted search still says what it found
                atomic_write_bytes(trail, json.dumps({"budget": budget.to_dict(truth is not None), "best": best, "log": log}, indent=1, default=str).encode())

            result = search_int8(source, proto, calibration, compared.batch, fp32_logits, truth, budget, target, method,
                                 proto.graph.input[0].name, fixed or CALIB_BATCH, fixed is not None, search=search, progress=progress, on_step=keep_trail)
            quantized, calib_info = result.proto, result.calibration
            searched = {"budget": budget.to_dict(truth is not None), "met": result.met, "recipe": {k: v for k, v in result.recipe.items() if k != "measured"}, "log": result.log}
        else:
            quantized, calib_info = _convert(source, proto, precision, target, method, calibration, progress)
        quantization = _quantization_entry(precision, target, source, calib_info, None if searched is None else searched["recipe"])
        write_record(quantized, replace(record, precision=precision, details={**record.details, "quantization": quantization}))
        data = quantized.SerializeToString()
        try:
            onnx.checker.check_model(data)
        except Exception as exc:
            raise CheckFailed(f"the {precision} model fails onnx.checker ({str(exc).splitlines()[0][:160]}); nothing was written.", "run with --debug and report it") from None

        progress.start(f"comparing with FP32 on {len(compared.batch)} images", (1 if fp32_logits is not None else 2) * len(compared.batch))
        try:
            new_rt = OrtRuntime(data, precision=precision)
        except InputError as exc:  # the source loaded, so this is a failed result, not bad input
            raise CheckFailed(f"the {precision} model does not load in onnxruntime ({exc.problem}); nothing was written.", "run with --debug and report it") from None
        with OrtRuntime(source) as fp32_rt, new_rt:
            # The search already ran FP32 on these images: the same session settings, so the same logits.
            reference = fp32_logits if fp32_logits is not None else fp32_rt.run_all(compared.batch, 32, progress.advance)
            candidate = new_rt.run_all(compared.batch, 32, progress.advance)
            if not np.isfinite(candidate).all():
                raise CheckFailed(f"the {precision} model produces non-finite logits (overflow); nothing was written.", "use another precision or report it with --debug")
            summary = compare_logits(candidate, reference).summary()
            comparison = {
                "images": len(compared.batch),
                "on": compared.description,
                "skipped": compared.skipped,
                "top1_agreement": summary["top1_agreement"],
                "top5_agreement": summary["top5_agreement"],
                "min_cosine": summary["min_cosine"],
                "max_rel_err": summary["max_rel_err"],
                "accuracy_fp32": _accuracy(reference, truth),
                "accuracy": _accuracy(candidate, truth),
                **_changes(reference, candidate, truth, compared, record.labels),
            }
            if truth is not None and searched is not None:
                comparison["budget_verdict"] = budget_verdict(comparison["accuracy_change"], budget.max_drop)
            within = searched is None or budget.holds({**comparison, "drop_points": None if truth is None else 100 * (comparison["accuracy_fp32"] - comparison["accuracy"])})
            latency = {}
            if measure_latency and (within or allow_drop):
                progress("measuring latency")
                latency = latency_comparison(fp32_rt, new_rt, compared.batch)
    except KeyboardInterrupt as exc:
        if precision != "int8":
            raise  # nothing was written: the CLI's general message holds
        if isinstance(exc, SearchInterrupted):
            kept, log, finished = exc.best, exc.log, False
        else:  # before the search measured anything, or after it chose (while comparing or timing)
            kept, log, finished = result, (result.log if result is not None else []), result is not None
        raise _keep_interrupted(kept, log, finished, output=output, source=source, record=record, precision=precision, target=target,
                                budget=budget, truth=truth, compared=compared, fp32_logits=fp32_logits, allow_drop=allow_drop) from None

    warnings = list(notes)
    written = within or allow_drop
    if searched is not None:
        searched["met"] = within
        # The measured accuracy and speed travel with the file (details.quantization).
        quantization["measured"] = {k: comparison[k] for k in ("images", "accuracy", "accuracy_fp32", "top1_agreement", "top5_agreement")}
        quantization["measured"]["latency"] = latency
        write_record(quantized, replace(record, precision=precision, details={**record.details, "quantization": quantization}))
        data = quantized.SerializeToString()
        if not within:
            warnings.append(f"no recipe met the budget ({searched['budget']['text']})" + ("; written anyway (--allow-drop)" if allow_drop else "; nothing was written"))
    if written:
        progress(f"writing {output}")
        atomic_write_bytes(output, data)
    sizes = {"fp32_bytes": source.stat().st_size, "bytes": len(data), "ratio": len(data) / source.stat().st_size}
    if calib_info is not None and calib_info["source"] == "synthetic":
        warnings.append("calibrated on synthetic images: accuracy on real images is unknown; calibrate on real images with --calib DIR")
    if searched is None and comparison["top1_agreement"] < AGREEMENT_WARNING:
        warnings.append(f"top-1 agreement with FP32 is {comparison['top1_agreement']:.1%} (< {AGREEMENT_WARNING:.0%}): check accuracy before shipping")
    recipe = RECIPES[(precision, target)]
    return QuantizeOutcome(output, source, precision, target, recipe, calib_info, comparison, sizes, latency, warnings, written, searched)
