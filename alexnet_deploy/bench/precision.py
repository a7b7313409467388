"""Side-by-side CPU benchmark of FP32 against the ``alexnet quantize`` variants (onnxruntime).

``python -m alexnet_deploy.bench.precision [WORKDIR] [--write BENCHMARKS.md]`` makes a
seed-000-shaped AlexNet (caffe-227 layout, Kaiming-initialised: speed does not depend on
training), exports it, makes fp16 / int8 (cpu and tensorrt targets) / int8-dynamic
variants, and times every model in the same process, round-robin, so machine drift hits
all of them alike. Reported: median latency per batch over rounds, images/s, speedup
against FP32, file size against FP32.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
from pathlib import Path

import numpy as np

from alexnet_deploy.fileio import atomic_write

VARIANTS = (("fp32", None, None), ("fp16", "fp16", "cpu"), ("int8", "int8", "cpu"), ("int8-trt", "int8", "tensorrt"), ("int8-dynamic", "int8-dynamic", "cpu"))


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (or platform's guess)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def make_models(work: Path) -> dict[str, Path]:
    """Export the seed-000-shaped model and quantize it every way; returns tag -> path."""
    import torch

    from alexnet_deploy.checkpoints.layouts import LAYOUTS
    from alexnet_deploy.checkpoints.options import ModelOptions
    from alexnet_deploy.quantize.pipeline import quantize_model
    from alexnet_deploy.exporter.workflow import export_checkpoint

    work.mkdir(parents=True, exist_ok=True)
    checkpoint = work / "seed000.pth"
    if not checkpoint.exists():
        torch.manual_seed(0)
        model = LAYOUTS["caffe-227"].build(10)
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                torch.nn.init.normal_(module.bias, std=0.01)
        atomic_write(checkpoint, lambda tmp: torch.save(model.state_dict(), tmp))
    paths = {"fp32": work / "seed000.onnx"}
    if not paths["fp32"].exists():
        export_checkpoint(checkpoint, paths["fp32"], ModelOptions(arch="caffe-227"))
    for tag, precision, target in VARIANTS[1:]:
        paths[tag] = work / f"seed000.{tag}.onnx"
        if not paths[tag].exists():
            calib = "synthetic" if precision == "int8" else None
            quantize_model(paths["fp32"], precision, paths[tag], calib=calib, calib_samples=64 if calib else None, target=target, measure_latency=False)
    return paths


def measure(paths: dict[str, Path], batches=(1, 32), rounds: int = 7, seconds_per_round: float = 1.0, threads: int | None = None) -> list[dict]:
    """Median latency of every model at every batch, measured round-robin; one dict per (model, batch)."""
    from alexnet_deploy.bench.timing import round_robin_medians
    from alexnet_deploy.runtimes.ort import OrtRuntime

    runtimes = {tag: OrtRuntime(path, threads=threads) for tag, path in paths.items()}
    rng = np.random.default_rng(0)
    rows = []
    for size in batches:
        batch = rng.standard_normal((size, 3, 227, 227), dtype=np.float32)
        runners = {tag: (lambda rt=rt: rt.run(batch)) for tag, rt in runtimes.items()}
        samples = round_robin_medians(runners, rounds=rounds, min_seconds=seconds_per_round)
        base = float(np.median(samples["fp32"]))
        for tag, values in samples.items():
            median = float(np.median(values))
            rows.append({
                "model": tag, "batch": size, "latency_ms": median * 1000, "throughput_ips": size / median,
                "speedup": base / median, "spread_pct": 100 * (max(values) - min(values)) / median,
                "bytes": paths[tag].stat().st_size, "size_ratio": paths[tag].stat().st_size / paths["fp32"].stat().st_size,
            })
    for rt in runtimes.values():
        rt.close()
    return rows


def markdown(rows: list[dict], rounds: int, threads: int | None) -> str:
    """The results as a BENCHMARKS.md section."""
    import onnxruntime

    lines = [
        "## Precision variants on onnxruntime CPU (`python -m alexnet_deploy.bench.precision`)",
        "",
        f"{datetime.date.today().isoformat()}, {cpu_name()}, {os.cpu_count()} cores, onnxruntime {onnxruntime.__version__}, "
        f"{threads or 'default'} threads. Seed-000-shaped AlexNet (caffe-227, 227x227, 10 classes). Each cell: median over "
        f"{rounds} rounds of the per-round median latency; models measured round-robin in one process.",
        "",
        "| model | batch | latency ms | images/s | speedup vs FP32 | file vs FP32 | round spread |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['batch']} | {row['latency_ms']:.2f} | {row['throughput_ips']:.1f} | {row['speedup']:.2f}x | "
            f"{100 * row['size_ratio']:.0f}% | {row['spread_pct']:.0f}% |"
        )
    return "\n".join(lines) + "\n"


def write_section(target: Path, section: str) -> None:
    """Replace (or append) this benchmark's section in ``target``, keeping the others."""
    title = section.splitlines()[0]
    text = target.read_text() if target.exists() else "# Benchmarks\n\nMeasured, not asserted. Each section says how it was measured.\n"
    parts = text.split("\n## ")
    head, sections = parts[0], ["## " + p for p in parts[1:]]
    same = [s.splitlines()[0] == title for s in sections]
    sections = [section if match else s for s, match in zip(sections, same)]
    if not any(same):
        sections.append(section)
    from alexnet_deploy.fileio import atomic_write_bytes

    atomic_write_bytes(target, (head.rstrip("\n") + "\n\n" + "\n".join(s.rstrip("\n") + "\n" for s in sections)).encode())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", nargs="?", default="bench-work", type=Path)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--write", type=Path, default=None, help="BENCHMARKS.md to update")
    args = parser.parse_args(argv)
    paths = make_models(args.workdir)
    rows = measure(paths, rounds=args.rounds, threads=args.threads)
    section = markdown(rows, args.rounds, args.threads)
    print(section)
    if args.write:
        write_section(args.write, section)


if __name__ == "__main__":
    main()
