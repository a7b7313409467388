"""Commands that turn a checkpoint into a checked ONNX file: export, verify, inspect, quickstart."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from alexnet_deploy.checkpoints.options import ModelOptions
from alexnet_deploy.cli.app import JsonTarget, command, out, progress_steps
from alexnet_deploy.cli.options import ArchOpt, JsonOpt, OnnxRuntime, TrustCodeOpt, TrustPickleOpt, flag, value, with_model_options, with_preprocessing
from alexnet_deploy.errors import CheckFailed, InputError
from alexnet_deploy.record import PreprocessingOverrides


@command()
@with_model_options
@with_preprocessing
def export(
    checkpoint: Annotated[Path, typer.Argument(metavar="CHECKPOINT", help="The .pth/.pt/.safetensors checkpoint (state_dict, wrapped dict, TorchScript, or pickled model with --trust-code).")],
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Output .onnx path (default: the checkpoint path with .onnx).")] = None,
    model_options: ModelOptions = None,
    labels: Annotated[Optional[Path], typer.Option("--labels", help="class_indices.json, labels.txt (one per line) or an ImageFolder root.", rich_help_panel="Metadata")] = None,
    preprocessing: PreprocessingOverrides = None,
    batch: Annotated[Optional[str], typer.Option("--batch", metavar="dynamic|N", help="'dynamic' (default) or a fixed batch size N.")] = None,
    opset: Annotated[Optional[int], typer.Option("--opset", help="ONNX opset, 18-23 (default 18).")] = None,
    no_verify: Annotated[bool, flag("--no-verify", help="Skip the parity check against PyTorch (not recommended).")] = False,
    json_target: JsonOpt = None,
):
    """Export a checkpoint to ONNX (LRN as one native node, labels and preprocessing inside) and verify it against PyTorch."""
    from alexnet_deploy.exporter.onnx_export import parse_batch
    from alexnet_deploy.exporter.workflow import export_checkpoint

    fixed_batch = parse_batch(batch or "dynamic")
    report = JsonTarget(json_target)
    with progress_steps(report.quiet) as step:
        outcome = export_checkpoint(
            checkpoint, output, model_options,
            labels=labels, preprocessing=preprocessing, batch=fixed_batch, opset=opset or 18, verify=not no_verify, progress=step,
        )
    from alexnet_deploy.cli.render import export_table

    data = outcome.to_dict()
    report.emit(data, export_table(data))


@command()
@with_model_options
def verify(
    model_file: Annotated[Path, typer.Argument(metavar="MODEL.onnx", help="The ONNX model: FP32 from export, or FP16/INT8 from quantize.")],
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", "-c", help="The checkpoint it was exported from (compared with PyTorch).")] = None,
    reference: Annotated[Optional[Path], typer.Option("--reference", "-r", help="Instead of a checkpoint: the FP32 ONNX it was quantized from (no torch needed).")] = None,
    model_options: ModelOptions = None,
    images: Annotated[Optional[Path], typer.Option("--images", help="Also compare on these images, preprocessed from the model's metadata.")] = None,
    samples: Annotated[Optional[int], typer.Option("--samples", help="Number of seeded random inputs (default 8 for FP32; 0 for FP16/INT8, which are judged on images).")] = None,
    batch_sizes: Annotated[Optional[str], typer.Option("--batch-sizes", metavar="N,N,...", help="Batch sizes to run at (default 1,7).")] = None,
    runtime: Annotated[Optional[OnnxRuntime], typer.Option("--runtime", help="Run the model in: ort (default), openvino, or openvino-bf16 (an FP32 file in BF16, judged by the bf16 criteria).")] = None,
    json_target: JsonOpt = None,
):
    """Check that an ONNX model computes what its checkpoint (or FP32 ONNX) computes; exit 1 if not.

    Criteria follow the model's precision. FP32: on every sample max |onnx - ref| / max |ref|
    <= 1e-4 and cosine >= 0.99999; on failure the first divergent layer is named.
    FP16: top-1 agreement >= 99% and cosine >= 0.999. BF16 (--runtime openvino-bf16 on the
    FP32 file): cosine >= 0.999 and top-1 agreement >= 95% (8 mantissa bits swap near-ties). INT8 and int8-dynamic: top-1 agreement >= 95% and cosine >= 0.95.
    Lower precisions are judged on --images (else synthetic images).
    """
    from alexnet_deploy.verify.jobs import verify_against_onnx, verify_checkpoint
    from alexnet_deploy.verify.parity import parse_batch_sizes

    if (checkpoint is None) == (reference is None):
        raise InputError("verify needs exactly one reference: --checkpoint CKPT.pth or --reference FP32.onnx.", f"e.g. alexnet verify {model_file} --checkpoint model.pth")
    sizes = parse_batch_sizes(batch_sizes or "1,7")
    report_target = JsonTarget(json_target)
    with progress_steps(report_target.quiet) as step:
        if reference is not None:
            report = verify_against_onnx(model_file, reference, images=images, samples=samples, batch_sizes=sizes, progress=step, runtime=value(runtime) or "ort")
        else:
            report = verify_checkpoint(
                model_file, checkpoint, model_options,
                images=images, samples=samples, batch_sizes=sizes, progress=step, runtime=value(runtime) or "ort",
            )
    from alexnet_deploy.cli.render import verify_table

    data = report.to_dict()
    report_target.emit(data, verify_table(data))
    if not report.passed:
        raise typer.Exit(CheckFailed.exit_code)


@command()
def inspect(
    path: Annotated[Path, typer.Argument(metavar="FILE", help="A checkpoint (.pth/.pt/.safetensors) or an ONNX model.")],
    arch: ArchOpt = None,
    trust_code: TrustCodeOpt = False,
    trust_pickle: TrustPickleOpt = False,
    json_target: JsonOpt = None,
):
    """Show what a checkpoint or ONNX file holds: layout, classes, input size, parameters, LRN, metadata, ops."""
    from alexnet_deploy.exporter.inspect import inspect_path

    report = JsonTarget(json_target)
    with progress_steps(report.quiet) as step:
        step(f"reading {path}")
        data = inspect_path(path, trust_code=trust_code or trust_pickle, arch=value(arch))
    from alexnet_deploy.cli.render import inspect_table

    report.emit(data, inspect_table(data))


@command()
def quickstart(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="Where to put the demo files (default alexnet-quickstart).")] = Path("alexnet-quickstart"),
    force: Annotated[bool, flag("--force", help="Use DIR even if it is not empty (its demo files are replaced).")] = False,
    skip_training: Annotated[bool, flag("--skip-training", help="Only the seeded checkpoint's export and verify (seconds): no trained model, no optimize.")] = False,
    json_target: JsonOpt = None,
):
    """Make a seeded AlexNet checkpoint (seed 001's layout, hand-written LRN), export and verify it;
    then train a small AlexNet on drawn shapes and optimize it: every precision evaluated and timed.

    The trained part takes about two minutes on 2 CPU cores (--skip-training leaves it out) and
    writes DIR/shapes/: the images (train/, val/), the checkpoint alexnet-shapes.pth and the
    optimize folder optimized/ with its report and best-latency.onnx / best-throughput.onnx.
    """
    from alexnet_deploy.quickstart import check_directory, run_quickstart

    report = JsonTarget(json_target)  # checked before DIR is made: a bad --json path leaves nothing behind
    check_directory(directory, force)
    with progress_steps(report.quiet) as step:
        data = run_quickstart(directory, force=force, train=not skip_training, progress=step)
    report.emit(data)  # the JSON where asked; the text below unless stdout carries the JSON
    if report.to_stdout:
        return
    from alexnet_deploy.cli.render import export_table, optimize_view

    out.print(f"[bold]alexnet quickstart[/bold]: made {escape(data['checkpoint'])}, {escape(data['labels'])} and {escape(data['samples'])}/, then exported and verified:\n")
    out.print(export_table(data["export"]))
    if "optimize" in data:
        training = data["training"]
        out.print(f"\n[bold]A trained model, optimized[/bold]: torchvision's AlexNet trained here for {training['epochs']} epochs on "
                  f"{escape(training['train_images'])}/ ({len(training['classes'])} shapes, train top-1 {100 * training['train_top1']:.1f}%), "
                  f"then `alexnet optimize` with {escape(training['val_images'])}/ as labelled validation images:\n")
        out.print(optimize_view(data["optimize"], out.width))
    out.print("\n[bold]Try next[/bold]")
    for line in data["next"]:
        out.print("  " + line, markup=False)
