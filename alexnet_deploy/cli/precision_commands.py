"""Commands that make and judge precision variants: quantize, eval."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from alexnet_deploy.checkpoints.options import ModelOptions
from alexnet_deploy.cli.app import JsonTarget, command, progress_steps
from alexnet_deploy.cli.options import (
    EvalRuntime, FollowLinksOpt, JsonOpt, Method, Precision, Target, ThreadsOpt, WorkersOpt, flag, value, with_model_options, with_preprocessing,
)
from alexnet_deploy.cli.ray_options import ActorsOpt, RayOpt
from alexnet_deploy.errors import InputError
from alexnet_deploy.record import PreprocessingOverrides


@command()
def quantize(
    model_file: Annotated[Path, typer.Argument(metavar="MODEL.onnx", help="The FP32 ONNX model from `alexnet export`.")],
    precision: Annotated[Precision, typer.Option("--precision", "-p", help="fp16, int8 (static, calibrated) or int8-dynamic (Gemm/MatMul weights only).")],
    calib: Annotated[Optional[str], typer.Option("--calib", metavar="DIR|synthetic", help="int8: a folder of representative images (an ImageFolder gives accuracy too), or 'synthetic'.")] = None,
    calib_samples: Annotated[Optional[int], typer.Option("--calib-samples", help="int8: images used for calibration (default 256; the rest are held out).")] = None,
    method: Annotated[Optional[Method], typer.Option("--method", help="int8 calibration method (default minmax).")] = None,
    target: Annotated[Optional[Target], typer.Option("--target", help="cpu (default): fastest accurate recipe on onnxruntime CPU. tensorrt: Q/DQ that TensorRT's parser accepts.")] = None,
    holdout: Annotated[Optional[Path], typer.Option("--holdout", help="Images for the FP32 comparison (default: calibration images held back).")] = None,
    holdout_samples: Annotated[Optional[int], typer.Option("--holdout-samples", help="At most this many comparison images (default 500).")] = None,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Output path (default: next to MODEL.onnx, named for the precision: MODEL.fp16.onnx, MODEL.int8.onnx, MODEL.int8-trt.onnx for --target tensorrt, or MODEL.int8-dynamic.onnx).")] = None,
    no_latency: Annotated[bool, flag("--no-latency", help="Skip the short latency comparison.")] = False,
    max_drop: Annotated[Optional[float], typer.Option("--max-drop", metavar="POINTS", help="int8 budget with labelled held-out images: top-1 may drop at most this many points (default 1.0).", rich_help_panel="Accuracy budget")] = None,
    min_agreement: Annotated[Optional[float], typer.Option("--min-agreement", metavar="PCT", help="int8 budget with unlabelled images: top-1 agreement with FP32 of at least this % (default 99).", rich_help_panel="Accuracy budget")] = None,
    no_search: Annotated[bool, flag("--no-search", help="int8: the single recipe (--method), no search; still refused outside the budget.", panel="Accuracy budget")] = False,
    allow_drop: Annotated[bool, flag("--allow-drop", help="int8: write the best model found even when it misses the budget (the exit code is still 1).", panel="Accuracy budget")] = False,
    follow_links: FollowLinksOpt = False,
    json_target: JsonOpt = None,
):
    """Make an FP16 or INT8 variant of an FP32 ONNX model and compare it with FP32 on held-out images.

    The comparison reports top-1 agreement with FP32, accuracy when the images are an
    ImageFolder, file sizes and latency. INT8 is accuracy-aware: it searches calibration
    methods, cross-layer equalization (+ bias correction) and keeping sensitive layers in
    float until the budget holds (--max-drop with labelled images, --min-agreement without),
    and writes nothing (exit 1) when no recipe does. Ctrl-C keeps a file within the budget
    once the search has measured one; OUTPUT.search.json lists every point tried.
    """
    from alexnet_deploy.errors import CheckFailed
    from alexnet_deploy.quantize.pipeline import quantize_model
    from alexnet_deploy.quantize.search import DEFAULT_MAX_DROP, DEFAULT_MIN_AGREEMENT, Budget

    if value(precision) != "int8" and (max_drop is not None or min_agreement is not None or no_search or allow_drop):
        raise InputError("--max-drop, --min-agreement, --no-search and --allow-drop apply to static int8 only.", "drop them, or use --precision int8")
    budget = Budget(DEFAULT_MAX_DROP if max_drop is None else max_drop, DEFAULT_MIN_AGREEMENT if min_agreement is None else min_agreement)
    report = JsonTarget(json_target)
    with progress_steps(report.quiet) as progress:
        outcome = quantize_model(
            model_file, value(precision), output=output, calib=calib, calib_samples=calib_samples, method=value(method),
            target=value(target) or "cpu", holdout=holdout, holdout_samples=500 if holdout_samples is None else holdout_samples,
            measure_latency=not no_latency, progress=progress, budget=budget, search=not no_search, allow_drop=allow_drop,
            follow_links=follow_links,
        )
    from alexnet_deploy.cli.render import quantize_table

    data = outcome.to_dict()
    report.emit(data, quantize_table(data))
    if outcome.search is not None and not outcome.search["met"]:
        # A missed budget is a failed check even when --allow-drop wrote the file.
        where = f"{outcome.output} was written anyway (--allow-drop)" if outcome.written else "nothing was written"
        raise CheckFailed(f"no INT8 recipe met the budget ({outcome.search['budget']['text']}); {where}.",
                          "loosen --max-drop/--min-agreement, calibrate on more representative images, or ship FP16")


@command(name="eval")
@with_model_options
@with_preprocessing
def eval_command(
    model_file: Annotated[Path, typer.Argument(metavar="MODEL", help="An ONNX model (any precision) or a checkpoint (with --runtime torch).")],
    data: Annotated[Path, typer.Option("--data", "-d", help="An ImageFolder: one sub-folder of images per class, named by the model's labels.")],
    runtime: Annotated[Optional[EvalRuntime], typer.Option("--runtime", help="ort, openvino, openvino-bf16 (ONNX files; openvino-bf16 runs an FP32 file in BF16) or torch (checkpoints); default from the file.")] = None,
    batch: Annotated[Optional[int], typer.Option("--batch", help="Batch size (default 32).")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Evaluate a seeded random subset of this many images.")] = None,
    json_target: JsonOpt = None,
    confusion: Annotated[Optional[Path], typer.Option("--confusion", metavar="FILE.png", help="Also draw the confusion matrix to this PNG.")] = None,
    threads: ThreadsOpt = None,
    workers: WorkersOpt = None,
    follow_links: FollowLinksOpt = False,
    model_options: ModelOptions = None,
    preprocessing: PreprocessingOverrides = None,
    ray: RayOpt = None,
    actors: ActorsOpt = None,
):
    """Accuracy on an ImageFolder: top-1, top-5, per class, confusion matrix, throughput.

    Preprocessing comes from the ONNX metadata (checkpoints: the layout's defaults or
    --resize/--crop/--mean/--std) and equals torchvision's transforms. Images are decoded
    by --workers threads while the model runs; undecodable files and images over the pixel
    limit are skipped and listed, and so are links out of the folder (--follow-links).
    """
    from alexnet_deploy.evaluate import evaluate, write_confusion_png
    from alexnet_deploy.fileio import check_writable

    report_target = JsonTarget(json_target)
    if confusion is not None:
        if confusion.suffix.lower() != ".png":
            raise InputError(f"--confusion {confusion} does not end in .png.", "name it *.png")
        check_writable(confusion, "confusion PNG")
    if ray is not None:
        from alexnet_deploy.cli.ray_options import run_eval_ray

        checkpoint_flags = model_options != ModelOptions() or preprocessing != PreprocessingOverrides()
        if workers is not None:
            raise InputError("--workers applies to local runs; Ray decodes in its own tasks.", "drop --workers, or drop --ray")
        report = run_eval_ray(model_file, data, value(runtime), batch, limit, threads, ray, actors, report_target, checkpoint_flags, follow_links)
    elif actors is not None:
        raise InputError("--actors applies to --ray runs.", "add --ray or drop it")
    else:
        with progress_steps(report_target.quiet) as progress:
            report = evaluate(
                model_file, data, runtime=value(runtime), batch=32 if batch is None else batch, limit=limit, threads=threads, progress=progress,
                model_options=model_options, preprocessing=preprocessing, workers=workers, follow_links=follow_links,
            )
    if confusion is not None:
        write_confusion_png(report, confusion)
    from alexnet_deploy.cli.render import eval_table

    report_target.emit(report.to_dict(), eval_table(report, confusion))
