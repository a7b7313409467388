"""``alexnet bench --suite``: the standard comparison written to BENCHMARKS.md.

torch eager and torch.compile on the seed-000-shaped checkpoint, onnxruntime and OpenVINO
on its FP32, FP16 and INT8 exports, OpenVINO BF16 (from the FP32 file) where the CPU has
native BF16, at batch 1 and 32; CUDA and TensorRT rows join where this machine can run
them (the others are listed as skipped, with the reason). The section ends with the
host's ISA line and GEMM ceilings and, per batch, the fastest variant measured.
"""

from __future__ import annotations

from pathlib import Path

from alexnet_deploy.bench.harness import TimingSettings
from alexnet_deploy.bench.models import make_models
from alexnet_deploy.bench.report import write_section
from alexnet_deploy.bench.report import markdown_table
from alexnet_deploy.bench.runner import BenchReport, run_bench
from alexnet_deploy.checkpoints.options import ModelOptions

SUITE_RUNTIMES = ("torch", "torch-compile", "torch-cuda", "torch-cuda-fp16", "ort", "openvino", "openvino-bf16", "ort-cuda", "trt")


def suite_excludes(runtime: str, path: Path, fp32: Path) -> bool:
    """True for the pairs the suite leaves out: CPU runtimes on the TensorRT INT8 recipe, BF16 on anything but the FP32 file."""
    if path.name.endswith("int8-trt.onnx"):
        # The TensorRT recipe: on a CPU runtime it is not a fair row (BENCHMARKS.md explains), keep it for trt only.
        return runtime.startswith(("ort", "openvino"))
    return runtime == "openvino-bf16" and Path(path).resolve() != Path(fp32).resolve()  # BF16 is a run-time choice on the FP32 file only


def run_suite(workdir: Path, settings: TimingSettings | None = None, threads: int | None = None, batches=(1, 32), progress=None) -> BenchReport:
    """Make the suite's models under ``workdir`` (cached) and measure them all in one run."""
    paths = make_models(Path(workdir))
    inputs = [Path(workdir) / "seed000.pth", paths["fp32"], paths["fp16"], paths["int8"], paths["int8-trt"]]
    fp32 = Path(paths["fp32"]).resolve()
    return run_bench(inputs, list(SUITE_RUNTIMES), list(batches), settings, threads, ModelOptions(arch="caffe-227"), progress,
                     exclude=lambda runtime, path: suite_excludes(runtime, path, fp32))


def suite_markdown(report: BenchReport) -> str:
    """The suite's BENCHMARKS.md section: machine, settings, table, skipped rows, harness overhead."""
    data = report.to_dict()
    machine, settings = data["machine"], data["settings"]
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
    lines = [
        "## Runtime suite (`alexnet bench --suite`)",
        "",
        f"{machine['date']}, {machine['cpu']}, {machine['cores']} cores, threads {machine['threads'] or 'default'}, GPU {machine['gpu'] or 'none'}; {versions}.",
        f"Seed-000-shaped AlexNet (caffe-227, 227x227, random weights). Warm-up {settings['warmup_s']} s excluded, then "
        + (f"{settings['iterations']} iterations" if settings["iterations"] else f"{settings['duration_s']} s")
        + " per row" + (f" in {settings['rounds']} rounds measured round-robin over all rows" if settings.get("rounds", 1) > 1 else "") + f", I/O {settings['io']} (numpy in, logits out). Speedup: throughput against the first row of the same batch ({data['results'][0]['baseline']}).",
        "",
        markdown_table(data),
        "",
    ]
    if data["skipped"]:
        lines.append("Not measured here:")
        lines += [f"- {s['runtime']} on {Path(s['model']).name}: {s['reason']}" for s in data["skipped"]]
        lines.append("")
    from alexnet_deploy.bench.report import ceilings_line
    from alexnet_deploy.bench.runner import fastest_lines

    from alexnet_deploy.bench.host import model_flops

    from alexnet_deploy.errors import AlexnetError

    try:
        flops = next((model_flops(r["model"]) for r in data["results"] if r["model"].endswith(".onnx")), None)
    except AlexnetError:  # the models were moved since the run: say less rather than fail
        flops = None
    per_image = f"{flops / 1e9:.2f} GFLOP per image, counted from the graph" if flops else "counted from the graph"
    lines.append(ceilings_line(machine) + f" GFLOP/s per row: model FLOPs ({per_image}) x images/s; % ceiling: of the ceiling for the row's precision (FP16 files compute in FP32 on this CPU).")
    lines.append("")
    lines += [f"- {line}" for line in fastest_lines(data["fastest"])]
    lines.append("")
    harness = data["harness"]
    lines.append(f"Harness overhead: {1000 * harness['overhead_ms_per_iteration']:.2f} µs per timed iteration, {harness['overhead_pct_of_fastest_p50']:.4f}% of the fastest p50.")
    return "\n".join(lines) + "\n"


def write_suite(report: BenchReport, target: Path) -> None:
    """Replace the suite's section of ``target`` (BENCHMARKS.md), keeping the others."""
    write_section(Path(target), suite_markdown(report))
