"""``alexnet optimize``: from a checkpoint to the file to ship."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from alexnet_deploy.checkpoints.options import ModelOptions
from alexnet_deploy.cli.app import JsonTarget, command, progress_steps
from alexnet_deploy.cli.options import FollowLinksOpt, JsonOpt, Target, value, with_model_options, with_preprocessing
from alexnet_deploy.errors import InputError
from alexnet_deploy.record import PreprocessingOverrides


@command()
@with_model_options
@with_preprocessing
def optimize(
    source: Annotated[Path, typer.Argument(metavar="CKPT|MODEL.onnx", help="The trained checkpoint, or its FP32 ONNX export.")],
    data: Annotated[Path, typer.Option("--data", "-d", help="Labelled validation images (an ImageFolder): accuracy of every variant and the INT8 budget.")],
    calib: Annotated[Optional[Path], typer.Option("--calib", metavar="DIR", help="INT8 calibration images (training images are best; default: drawn from --data).")] = None,
    target: Annotated[Optional[Target], typer.Option("--target", help="cpu (default): onnxruntime (and OpenVINO when present). tensorrt: TensorRT engines (NVIDIA GPU).")] = None,
    runtimes: Annotated[Optional[str], typer.Option("--runtime", metavar="R,...", help="Runtimes to benchmark, comma separated (default: the target's: ort and openvino (when installed) for cpu, trt for tensorrt; BF16 is added on CPUs that have it).")] = None,
    batch: Annotated[Optional[str], typer.Option("--batch", metavar="1,32", help="Batch sizes: latency at 1, throughput at the largest (default 1,32).")] = None,
    max_drop: Annotated[Optional[float], typer.Option("--max-drop", metavar="POINTS", help="A variant qualifies when its top-1 is at most this many points under FP32 (default 1.0).")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("-o", "--out-dir", metavar="OUT_DIR", help="Where the variants and reports go (default: SOURCE-optimized/ next to it). Rerunning resumes; one run at a time per folder.")] = None,
    duration: Annotated[Optional[float], typer.Option("--duration", metavar="SECONDS", help="Timed seconds per benchmark measurement (default 3).")] = None,
    follow_links: FollowLinksOpt = False,
    json_target: JsonOpt = None,
    model_options: ModelOptions = None,
    preprocessing: PreprocessingOverrides = None,
):
    """Export, verify, make every precision the target runs, evaluate and benchmark each, and recommend the file to ship.

    Writes OUT_DIR/ with the variants, report.md, report.json, pareto.png, and
    best-latency.onnx / best-throughput.onnx: the fastest variants within --max-drop at
    batch 1 and at the largest batch. Finished stages are cached in OUT_DIR, so an
    interrupted run resumes; changed inputs (by content: the model's and the images' bytes)
    redo what depends on them. One run at a time per OUT_DIR: a second one exits 2 naming
    the run that holds it.
    """
    from alexnet_deploy.bench.harness import TimingSettings
    from alexnet_deploy.bench.runner import RUNTIMES, parse_batches
    from alexnet_deploy.parsing import parse_names
    from alexnet_deploy.optimize import markdown, optimize as run_optimize

    if duration is not None and duration <= 0:
        raise InputError(f"--duration {duration} must be > 0 seconds.", "e.g. --duration 3")
    report_target = JsonTarget(json_target)
    with progress_steps(report_target.quiet) as progress:
        report = run_optimize(
            source, data, out_dir, calib=calib, target=value(target) or "cpu",
            runtimes=parse_names(runtimes, "--runtime", RUNTIMES) if runtimes else None, batches=parse_batches(batch) if batch else None,
            max_drop=1.0 if max_drop is None else max_drop,
            model_options=model_options, preprocessing=preprocessing,
            timing=TimingSettings(warmup_s=min(1.0, duration), duration_s=duration) if duration else None, progress=progress,
            follow_links=follow_links,
        )
    from rich.text import Text

    from alexnet_deploy.cli.app import out
    from alexnet_deploy.cli.render import optimize_view

    # A terminal gets the table and text that wrap at its width; a pipe or file the Markdown itself.
    report_target.emit(report, optimize_view(report, out.width) if out.is_terminal else Text(markdown(report)))
