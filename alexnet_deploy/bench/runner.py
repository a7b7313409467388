"""``alexnet bench``: every runtime x model x batch combination measured in one run.

Inputs are checkpoints (torch runtimes), ONNX files of any precision (onnxruntime; ``trt``
builds and caches an engine first) and TensorRT engines. A runtime that cannot run here is
reported with its reason instead of failing the whole run.
"""

from __future__ import annotations

import datetime
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alexnet_deploy.bench.harness import TimingSettings, device_timing_possible, harness_overhead_ms, time_runtime
from alexnet_deploy.bench.load import LoadProbe, flags, quiet_reading, round_spread
from alexnet_deploy.bench.stats import latency_stats, throughput
from alexnet_deploy.errors import AlexnetError, EnvironmentFailure, InputError
from alexnet_deploy.parsing import parse_positive_ints
from alexnet_deploy.progress import ProgressLike, as_progress

RUNTIMES = ("torch", "torch-compile", "torch-cuda", "torch-cuda-fp16", "ort", "ort-cuda", "ort-trt", "openvino", "openvino-bf16", "trt")
KIND_RUNTIMES = {
    "checkpoint": ("torch", "torch-compile", "torch-cuda", "torch-cuda-fp16"),
    "onnx": ("ort", "ort-cuda", "ort-trt", "openvino", "openvino-bf16", "trt"),
    "engine": ("trt",),
}


@dataclass
class BenchReport:
    """Machine description, one result per measured combination, and what was skipped and why."""

    machine: dict[str, Any]
    results: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    harness: dict[str, Any] = field(default_factory=dict)
    fastest: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"machine": self.machine, "settings": self.settings, "harness": self.harness, "results": self.results, "skipped": self.skipped, "fastest": self.fastest}


def input_kind(path: Path) -> str:
    """'checkpoint', 'onnx' or 'engine' for a bench input; InputError for anything else."""
    from alexnet_deploy.onnx_file import check_input_file, file_kind

    kind = file_kind(check_input_file(Path(path), "bench input"))
    if kind is not None:
        return kind
    raise InputError(f"{path} is not a checkpoint, an ONNX model or a TensorRT engine.", "give .pth/.pt, .onnx or .engine files")


def parse_batches(text: str) -> list[int]:
    """``"1,8,32"`` -> [1, 8, 32] (each size once)."""
    return list(dict.fromkeys(parse_positive_ints(text, "--batch", "1,8,32")))


def machine_info(threads: int | None, measure_ceilings: bool = True) -> dict[str, Any]:
    """CPU, its ISA features and GEMM ceilings, cores, threads, library versions, GPU (when torch sees one), the date."""
    import importlib.metadata as metadata

    from alexnet_deploy.bench.host import cpu_name, host_info

    versions = {}
    for package in ("numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "openvino", "torch", "tensorrt"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return {
        "cpu": cpu_name(), **host_info(threads, measure_ceilings), "cores": os.cpu_count(), "threads": threads, "gpu": gpu, "platform": platform.platform(),
        "python": platform.python_version(), "versions": versions,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def open_runtime(runtime: str, path: Path, threads: int | None, model_options=None, engine_cache: Path | None = None, progress=None):
    """Load ``path`` in ``runtime``; DependencyError/InputError say why it cannot run here."""
    if runtime.startswith("torch"):
        from alexnet_deploy.errors import require

        require("torch", "torch", f"The {runtime} runtime")  # a skipped row naming the extra, not a crash
        from alexnet_deploy.checkpoints.resolve import resolve_model
        from alexnet_deploy.runtimes.torch_runtime import TorchRuntime

        if threads:
            import torch

            torch.set_num_threads(int(threads))
        from alexnet_deploy.checkpoints.options import ModelOptions

        resolved = resolve_model(path, model_options or ModelOptions())
        device = "cuda" if "cuda" in runtime else "cpu"
        return TorchRuntime(resolved.reference, resolved.input_size, path.name, device=device, half=runtime.endswith("fp16"), compile=runtime == "torch-compile")
    if runtime.startswith(("ort", "openvino")):
        from alexnet_deploy.runtimes import open_runtime as open_onnx

        return open_onnx(path, runtime, threads)
    from alexnet_deploy.build.engine import build_engine
    from alexnet_deploy.runtimes.tensorrt import TrtRuntime

    if input_kind(path) == "onnx":
        engine = (engine_cache or path.parent) / (path.stem + ".engine")
        if not _cached_engine_fits(engine, path):
            build_engine(path, engine, progress=progress)
        path = engine
    return TrtRuntime(path)


def _measure_cells(cells, settings: TimingSettings, report: BenchReport, progress, rounds: int) -> None:
    """Time every (runtime name, path, runtime, batch) cell, ``rounds`` times round-robin; append rows in cell order."""
    import dataclasses
    import math

    if not cells:
        return
    per_round = dataclasses.replace(
        settings, duration_s=settings.duration_s / rounds,
        iterations=None if settings.iterations is None else max(1, math.ceil(settings.iterations / rounds)),
        min_iterations=max(1, math.ceil(settings.min_iterations / rounds)),
    )
    samples: dict[int, list[float]] = {i: [] for i in range(len(cells))}
    by_round: dict[int, list[list[float]]] = {i: [] for i in range(len(cells))}
    others: dict[int, list[tuple[float, float]]] = {i: [] for i in range(len(cells))}  # (other processes' CPU share, seconds)
    failed: dict[int, str] = {}
    for round_index in range(rounds):
        for i, (runtime_name, path, runtime, size) in enumerate(cells):
            if i in failed:
                progress.advance()
                continue
            progress(f"{runtime_name} {path.name} batch {size}" + (f" (round {round_index + 1}/{rounds})" if rounds > 1 else ""))
            warm = per_round if round_index == 0 else dataclasses.replace(per_round, warmup_s=0.0)
            try:
                probe, tick = LoadProbe(), time.perf_counter()
                measured = time_runtime(runtime, size, warm)
                share = probe.other_share()
                if share is not None:
                    others[i].append((share, time.perf_counter() - tick))
                samples[i] += measured
                by_round[i].append(measured)
            except AlexnetError as exc:
                failed[i] = f"batch {size}: {exc.problem}"
            except Exception as exc:  # e.g. a torch.compile backend failure or CUDA out of memory: keep the other rows
                failed[i] = f"batch {size}: {type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
            progress.advance()
    for i, (runtime_name, path, runtime, size) in enumerate(cells):
        if i in failed:
            report.skipped.append({"runtime": runtime_name, "model": str(path), "reason": failed[i]})
            continue
        info = runtime.info()
        io = "device" if settings.io == "device" and device_timing_possible(runtime) else "host"
        row = {
            "runtime": runtime_name, "model": str(path), "precision": info.precision, "device": info.device, "batch": size, "io": io,
            "latency_ms": latency_stats(samples[i]), "throughput_ips": throughput(size, samples[i]), "iterations": len(samples[i]),
        }
        if "runtime_precision" in info.details:  # what the heavy layers really ran in (OpenVINO's execution graph)
            row["runtime_precision"] = info.details["runtime_precision"]
        seconds = sum(t for _, t in others[i])
        row["other_cpu_share"] = sum(share * t for share, t in others[i]) / seconds if seconds > 0 else None
        row["round_spread"] = round_spread(by_round[i])
        report.results.append(row)


def add_roofline(report: BenchReport) -> None:
    """Each CPU row: achieved GFLOP/s (model FLOPs x images/s) and its share of the host's ceiling for its precision."""
    from alexnet_deploy.bench.host import CEILING_FOR, model_flops

    ceilings = report.machine.get("ceilings") or {}
    for row in report.results:
        flops = model_flops(row["model"]) if row["model"].endswith(".onnx") else None
        if flops is None or row["device"] != "cpu":
            continue
        row["gflops"] = flops * row["throughput_ips"] / 1e9
        ceiling = ceilings.get(CEILING_FOR.get(row["precision"], ""), {}).get("gflops")
        if ceiling:
            row["ceiling_pct"] = 100.0 * row["gflops"] / ceiling


def fastest_per_batch(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per batch size: the row with the highest throughput, and its speedup over onnxruntime FP32 (when measured)."""
    out = []
    for size in sorted({r["batch"] for r in results}):
        rows = [r for r in results if r["batch"] == size]
        best = max(rows, key=lambda r: r["throughput_ips"])
        base = next((r for r in rows if r["runtime"] == "ort" and r["precision"] == "fp32"), None)
        out.append({
            "batch": size, "runtime": best["runtime"], "precision": best["precision"], "model": Path(best["model"]).name,
            "throughput_ips": best["throughput_ips"], "latency_ms_p50": best["latency_ms"]["p50"],
            "speedup_vs_ort_fp32": best["throughput_ips"] / base["throughput_ips"] if base else None,
        })
    return out


def fastest_lines(fastest: list[dict[str, Any]]) -> list[str]:
    """'fastest at batch 1: openvino int8 (seed000.int8.onnx) 217 img/s, 3.4x onnxruntime FP32' per batch."""
    lines = []
    for f in fastest:
        versus = f", {f['speedup_vs_ort_fp32']:.2f}x onnxruntime FP32" if f["speedup_vs_ort_fp32"] is not None else " (no onnxruntime FP32 row to compare with)"
        lines.append(f"fastest at batch {f['batch']}: {f['runtime']} {f['precision']} ({f['model']}) {f['throughput_ips']:.1f} img/s, p50 {f['latency_ms_p50']:.2f} ms{versus}")
    return lines


def _cached_engine_fits(engine: Path, onnx_path: Path) -> bool:
    """True when ``engine`` exists and was built from this very ONNX file with this TensorRT."""
    from alexnet_deploy.fileio import sha256_file
    from alexnet_deploy.runtimes.tensorrt import read_sidecar

    if not engine.exists():
        return False
    try:
        import tensorrt

        sidecar = read_sidecar(engine)
    except (ImportError, AlexnetError):
        return False
    return sidecar.source_onnx_sha256 == sha256_file(onnx_path) and sidecar.tensorrt_version == tensorrt.__version__


def run_bench(
    inputs: list[Path],
    runtimes: list[str],
    batches: list[int],
    settings: TimingSettings | None = None,
    threads: int | None = None,
    model_options=None,
    progress: ProgressLike = None,
    exclude=None,
) -> BenchReport:
    """Measure every compatible (runtime, input, batch); speedups are against the first row of the same batch.

    ``exclude(runtime, path)`` True leaves that pair out of the plan (the suite's unfair pairs).
    """
    progress = as_progress(progress)
    settings = (settings or TimingSettings()).validated()
    for runtime in runtimes:
        if runtime not in RUNTIMES:
            raise InputError(f"unknown runtime {runtime}.", f"choose from {', '.join(RUNTIMES)}")
    unique = list(dict.fromkeys(Path(p).resolve() for p in inputs))
    kinds = [(p, input_kind(p)) for p in unique]
    plan = [(rt, path) for rt in runtimes for path, kind in kinds if rt in KIND_RUNTIMES[kind] and not (exclude and exclude(rt, path))]
    report = BenchReport({**machine_info(threads), "load_before": quiet_reading()}, settings={"warmup_s": settings.warmup_s, "duration_s": settings.duration_s, "iterations": settings.iterations, "io": settings.io, "batches": batches, "rounds": settings.rounds})
    for path, kind in kinds:
        if not any(p == path for _, p in plan):
            report.skipped.append({"runtime": ",".join(runtimes), "model": str(path), "reason": f"no requested runtime takes a {kind} (use {', '.join(KIND_RUNTIMES[kind])})"})
    rounds = settings.rounds
    progress.start(f"benchmarking {len(plan)} runtime/model pair(s) x {len(batches)} batch size(s)" + (f" in {rounds} rounds" if rounds > 1 else ""), len(plan) * len(batches) * rounds)
    # rounds > 1: every runtime stays loaded and each round measures every cell in turn, so
    # load changes on a shared machine hit all rows alike (a row's samples are its rounds' union).
    cells: list[tuple[str, Path, Any, int]] = []
    loaded: list = []
    refusals: list[AlexnetError] = []  # why runtimes could not load: all missing packages or devices -> exit 4
    try:
        for runtime_name, path in plan:
            progress(f"loading {path.name} in {runtime_name}")
            try:
                runtime = open_runtime(runtime_name, path, threads, model_options, progress=progress)
            except AlexnetError as exc:
                refusals.append(exc)
                report.skipped.append({"runtime": runtime_name, "model": str(path), "reason": exc.problem})
                progress.advance(len(batches) * rounds)
                continue
            loaded.append(runtime)
            info = runtime.info()
            for size in batches:
                if size < info.min_batch or (info.max_batch is not None and size > info.max_batch):
                    report.skipped.append({"runtime": runtime_name, "model": str(path), "reason": f"batch {size} is outside the model's limits {info.min_batch}..{info.max_batch}"})
                    progress.advance(rounds)
                    continue
                cells.append((runtime_name, path, runtime, size))
            if rounds == 1:  # one pass: measure now and free the model before loading the next
                _measure_cells(cells, settings, report, progress, rounds)
                cells = []
                runtime.close()
        _measure_cells(cells, settings, report, progress, rounds)
    finally:
        for runtime in loaded:
            runtime.close()
    firsts: dict[int, dict] = {}
    for row in report.results:
        base = firsts.setdefault(row["batch"], row)
        row["speedup"] = row["throughput_ips"] / base["throughput_ips"]
        row["baseline"] = f"{base['runtime']} {Path(base['model']).name}"
    add_roofline(report)
    for row in report.results:
        row["flags"] = flags(row)
    report.fastest = fastest_per_batch(report.results)
    overhead = harness_overhead_ms()
    fastest = min((r["latency_ms"]["p50"] for r in report.results), default=None)
    report.harness = {"overhead_ms_per_iteration": overhead, "overhead_pct_of_fastest_p50": 100 * overhead / fastest if fastest else None}
    if not report.results:
        reasons = "; ".join(f"{s['runtime']} {Path(s['model']).name}: {s['reason']}" for s in report.skipped[:3])
        if refusals and len(refusals) == len(report.skipped) and all(isinstance(e, EnvironmentFailure) for e in refusals):
            raise EnvironmentFailure(f"nothing could be measured here ({reasons}).", refusals[0].fix or "install what the runtimes need")
        raise InputError(f"nothing could be measured ({reasons}).", "pick runtimes that can run here (torch, ort on a CPU) and matching inputs")
    return report
