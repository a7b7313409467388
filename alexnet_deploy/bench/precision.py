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
from pathlib import Path

import numpy as np

from alexnet_deploy.bench.host import cpu_name
from alexnet_deploy.bench.models import make_models
from alexnet_deploy.bench.report import write_section

def measure(paths: dict[str, Path], batches=(1, 32), rounds: int = 7, seconds_per_round: float = 1.0, threads: int | None = None) -> list[dict]:
    """Median latency of every model at every batch, measured round-robin; one dict per (model, batch)."""
    from alexnet_deploy.timing import round_robin_medians
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
