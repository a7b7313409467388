"""The ``alexnet`` command line: parses options, calls the library, prints.

Errors the user can fix print as one or two lines and exit 2 (bad input) or 1 (a check
failed); ``--debug`` anywhere on the command line shows the traceback instead.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from alexnet_deploy import __version__
from alexnet_deploy.errors import AlexnetError, CheckFailed, InputError
from alexnet_deploy.progress import Progress

app = typer.Typer(
    name="alexnet",
    help="Take trained PyTorch AlexNet checkpoints to production: export to ONNX with native LRN, verify parity, quantize to FP16/INT8, evaluate accuracy, build TensorRT engines, benchmark runtimes, inspect.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
DEBUG_ENV = "ALEXNET_DEBUG"


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV) == "1"


def handles_errors(command):
    """Map the toolkit's errors to a short message and an exit code (tracebacks only with --debug)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except AlexnetError as exc:
            if _debug():
                raise
            err.print(Text("error: ", style="red") + Text(exc.problem))
            if exc.fix:
                err.print(f"  fix: {exc.fix}", markup=False)
            raise typer.Exit(exc.exit_code)
        except KeyboardInterrupt:
            err.print("interrupted; no partial output file was left behind.")
            raise typer.Exit(130)
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:  # a bug: say so briefly, keep details for --debug
            if _debug():
                raise
            detail = str(exc).splitlines()[0][:200] if str(exc) else ""
            err.print(Text("internal error: ", style="red") + Text(f"{type(exc).__name__}: {detail}"))
            err.print("  fix: rerun with --debug and report the traceback", markup=False)
            raise typer.Exit(3)

    return wrapper


class _RichProgress(Progress):
    """Steps as a spinner line, counted work as a bar, on stderr (see alexnet_deploy.progress)."""

    def __init__(self, bar):
        self.bar = bar
        self.task = bar.add_task("starting", total=None)

    def __call__(self, message: str) -> None:
        task = self.bar.tasks[-1]
        if task.total is not None and not task.finished:
            # A message inside counted work (bench's "loading ...") relabels it, keeping the count.
            self.bar.update(self.task, description=escape(f"{message} …"))
            return
        # rich's update cannot turn a bar back into a spinner (total=None means "unchanged").
        self.bar.remove_task(self.task)
        self.task = self.bar.add_task(escape(f"{message} …"), total=None)

    def start(self, description: str, total: int) -> None:
        self.bar.update(self.task, description=escape(description), total=total, completed=0)

    def advance(self, units: int = 1) -> None:
        self.bar.advance(self.task, units)


@contextmanager
def progress_steps(quiet: bool = False) -> Iterator:
    """Progress on stderr (spinner for steps, bar for counted work); yields a ``Progress``."""
    if quiet or not err.is_terminal:
        yield Progress()
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, SpinnerColumn, TextColumn, TimeRemainingColumn

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Bar(*columns, console=err, transient=True) as bar:
        yield _RichProgress(bar)


# Options shared by every command that turns a checkpoint into a network.
ArchOpt = typer.Option(None, "--arch", help="Force a built-in layout: torchvision, caffe-227, paper-224, paper-lrn, paper-hand-lrn, layers-fc, half-width.", rich_help_panel="Model")
ModelOpt = typer.Option(None, "--model", help="Your own class instead of a built-in layout: FILE.py:ClassName.", rich_help_panel="Model")
ModelKwargsOpt = typer.Option(None, "--model-kwargs", help="Constructor arguments for --model: key=value,... (Python literals).", rich_help_panel="Model")
InputSizeOpt = typer.Option(None, "--input-size", help="Input height/width in pixels (default: the layout's, e.g. 224 or 227).", rich_help_panel="Model")
TrustPickleOpt = typer.Option(False, "--trust-pickle", help="Allow unpickling a whole saved nn.Module (runs code from the file: only for files you trust).", rich_help_panel="Model")
# Preprocessing of a checkpoint's model (export writes it into the ONNX; eval applies it to checkpoints).
ResizeOpt = typer.Option(None, "--resize", help="Resize size before the center crop.", rich_help_panel="Preprocessing")
CropOpt = typer.Option(None, "--crop", help="Center-crop size (= the model's input size).", rich_help_panel="Preprocessing")
MeanOpt = typer.Option(None, "--mean", help="Normalize mean, R,G,B (e.g. 0.485,0.456,0.406).", rich_help_panel="Preprocessing")
StdOpt = typer.Option(None, "--std", help="Normalize std, R,G,B (e.g. 0.229,0.224,0.225).", rich_help_panel="Preprocessing")


def _model_options(arch, model, model_kwargs, input_size, trust_pickle):
    from alexnet_deploy.exporter.options import ModelOptions

    return ModelOptions(arch, model, model_kwargs, input_size, trust_pickle)


def _finite(value):
    """JSON has no NaN/Infinity: write non-finite numbers as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _write_json(data: dict, target: Optional[Path]) -> None:
    text = json.dumps(_finite(data), indent=2, default=str, allow_nan=False)
    if target is None:
        out.print(text, markup=False, highlight=False)
        return
    from alexnet_deploy.fileio import atomic_write_bytes, check_writable

    check_writable(target, "JSON report")
    atomic_write_bytes(target, (text + "\n").encode())


@app.command()
@handles_errors
def export(
    checkpoint: Path = typer.Argument(..., help="The .pth/.pt checkpoint (state_dict, wrapped dict, TorchScript, or pickled model with --trust-pickle)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output .onnx path (default: the checkpoint path with .onnx)."),
    arch: Optional[str] = ArchOpt,
    model: Optional[str] = ModelOpt,
    model_kwargs: Optional[str] = ModelKwargsOpt,
    input_size: Optional[int] = InputSizeOpt,
    trust_pickle: bool = TrustPickleOpt,
    labels: Optional[Path] = typer.Option(None, "--labels", help="class_indices.json, labels.txt (one per line) or an ImageFolder root.", rich_help_panel="Metadata"),
    resize: Optional[int] = ResizeOpt,
    crop: Optional[int] = CropOpt,
    mean: Optional[str] = MeanOpt,
    std: Optional[str] = StdOpt,
    batch: str = typer.Option("dynamic", "--batch", help="'dynamic' or a fixed batch size N."),
    opset: int = typer.Option(18, "--opset", help="ONNX opset (18-23)."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Skip the parity check against PyTorch (not recommended)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
):
    """Export a checkpoint to ONNX (LRN as one native node, labels and preprocessing inside) and verify it against PyTorch."""
    from alexnet_deploy.exporter.onnx_export import parse_batch
    from alexnet_deploy.exporter.workflow import PreprocessingOptions, export_checkpoint, parse_triple

    fixed_batch = parse_batch(batch)
    overrides = PreprocessingOptions(resize, crop, parse_triple(mean, "mean"), parse_triple(std, "std"))
    with progress_steps(as_json) as step:
        outcome = export_checkpoint(
            checkpoint, output, _model_options(arch, model, model_kwargs, input_size, trust_pickle),
            labels=labels, preprocessing=overrides, batch=fixed_batch, opset=opset, verify=not no_verify, progress=step,
        )
    if as_json:
        _write_json(outcome.to_dict(), None)
        return
    from alexnet_deploy.render import export_table

    out.print(export_table(outcome.to_dict()))


@app.command()
@handles_errors
def inspect(
    path: Path = typer.Argument(..., help="A checkpoint (.pth/.pt) or an ONNX model."),
    arch: Optional[str] = ArchOpt,
    trust_pickle: bool = TrustPickleOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
):
    """Show what a checkpoint or ONNX file holds: layout, classes, input size, parameters, LRN, metadata, ops."""
    from alexnet_deploy.exporter.inspect import inspect_path

    with progress_steps(as_json) as step:
        step(f"reading {path}")
        data = inspect_path(path, trust_pickle=trust_pickle, arch=arch)
    if as_json:
        _write_json(data, None)
        return
    from alexnet_deploy.render import inspect_table

    out.print(inspect_table(data))


@app.command()
@handles_errors
def verify(
    model_file: Path = typer.Argument(..., metavar="MODEL.onnx", help="The ONNX model: FP32 from export, or FP16/INT8 from quantize."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c", help="The checkpoint it was exported from (compared with PyTorch)."),
    reference: Optional[Path] = typer.Option(None, "--reference", "-r", help="Instead of a checkpoint: the FP32 ONNX it was quantized from (no torch needed)."),
    arch: Optional[str] = ArchOpt,
    model: Optional[str] = ModelOpt,
    model_kwargs: Optional[str] = ModelKwargsOpt,
    input_size: Optional[int] = InputSizeOpt,
    trust_pickle: bool = TrustPickleOpt,
    images: Optional[Path] = typer.Option(None, "--images", help="Also compare on these images, preprocessed from the model's metadata."),
    samples: Optional[int] = typer.Option(None, "--samples", help="Number of seeded random inputs (default 8 for FP32; 0 for FP16/INT8, which are judged on images)."),
    batch_sizes: str = typer.Option("1,7", "--batch-sizes", help="Batch sizes to run at, comma separated."),
    json_file: Optional[Path] = typer.Option(None, "--json", help="Write the report as JSON to this file ('-' for stdout)."),
):
    """Check that an ONNX model computes what its checkpoint (or FP32 ONNX) computes; exit 1 if not.

    Criteria follow the model's precision. FP32: on every sample max |onnx - ref| / max |ref|
    <= 1e-4 and cosine >= 0.99999; on failure the first divergent layer is named.
    FP16: top-1 agreement >= 99% and cosine >= 0.999. INT8 and int8-dynamic: top-1
    agreement >= 95% and cosine >= 0.95, judged on --images (else synthetic images).
    """
    from alexnet_deploy.exporter.verify import parse_batch_sizes
    from alexnet_deploy.exporter.workflow import verify_against_onnx, verify_checkpoint

    if (checkpoint is None) == (reference is None):
        raise InputError("verify needs exactly one reference: --checkpoint CKPT.pth or --reference FP32.onnx.", f"e.g. alexnet verify {model_file} --checkpoint model.pth")
    sizes = parse_batch_sizes(batch_sizes)
    if json_file is not None and str(json_file) != "-":
        from alexnet_deploy.fileio import check_writable

        check_writable(json_file, "JSON report")
    to_stdout = json_file is not None and str(json_file) == "-"
    with progress_steps(to_stdout) as step:
        if reference is not None:
            report = verify_against_onnx(model_file, reference, images=images, samples=samples, batch_sizes=sizes, progress=step)
        else:
            report = verify_checkpoint(
                model_file, checkpoint, _model_options(arch, model, model_kwargs, input_size, trust_pickle),
                images=images, samples=samples, batch_sizes=sizes, progress=step,
            )
    data = report.to_dict()
    if json_file is not None:
        _write_json(data, None if to_stdout else json_file)
    if not to_stdout:
        from alexnet_deploy.render import verify_table

        out.print(verify_table(data))
    if not report.passed:
        raise typer.Exit(CheckFailed.exit_code)


@app.command()
@handles_errors
def quantize(
    model_file: Path = typer.Argument(..., metavar="MODEL.onnx", help="The FP32 ONNX model from `alexnet export`."),
    precision: str = typer.Option(..., "--precision", "-p", help="fp16 | int8 (static, calibrated) | int8-dynamic (Gemm/MatMul weights only)."),
    calib: Optional[str] = typer.Option(None, "--calib", help="int8: a folder of representative images (an ImageFolder gives accuracy too), or 'synthetic'."),
    calib_samples: Optional[int] = typer.Option(None, "--calib-samples", help="int8: images used for calibration (default 256; the rest are held out)."),
    method: Optional[str] = typer.Option(None, "--method", help="int8 calibration: minmax (default) | entropy | percentile."),
    target: str = typer.Option("cpu", "--target", help="cpu: fastest accurate recipe on onnxruntime CPU. tensorrt: Q/DQ that TensorRT's parser accepts."),
    holdout: Optional[Path] = typer.Option(None, "--holdout", help="Images for the FP32 comparison (default: calibration images held back)."),
    holdout_samples: int = typer.Option(500, "--holdout-samples", help="At most this many comparison images."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output path (default: MODEL.fp16.onnx, MODEL.int8.onnx, MODEL.int8-trt.onnx, MODEL.int8-dynamic.onnx)."),
    no_latency: bool = typer.Option(False, "--no-latency", help="Skip the short latency comparison."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
):
    """Make an FP16 or INT8 variant of an FP32 ONNX model and compare it with FP32 on held-out images.

    The comparison reports top-1 agreement with FP32, accuracy when the images are an
    ImageFolder, file sizes and latency, and warns when agreement is under 99%.
    """
    from alexnet_deploy.exporter.quantize import quantize_model

    with progress_steps(as_json) as progress:
        outcome = quantize_model(
            model_file, precision, output=output, calib=calib, calib_samples=calib_samples, method=method, target=target,
            holdout=holdout, holdout_samples=holdout_samples, measure_latency=not no_latency, progress=progress,
        )
    if as_json:
        _write_json(outcome.to_dict(), None)
        return
    from alexnet_deploy.render import quantize_table

    out.print(quantize_table(outcome.to_dict()))


@app.command(name="eval")
@handles_errors
def eval_command(
    model_file: Path = typer.Argument(..., metavar="MODEL", help="An ONNX model (any precision) or a checkpoint (with --runtime torch)."),
    data: Path = typer.Option(..., "--data", "-d", help="An ImageFolder: one sub-folder of images per class, named by the model's labels."),
    runtime: Optional[str] = typer.Option(None, "--runtime", help="ort (ONNX files) or torch (checkpoints); default from the file."),
    batch: int = typer.Option(32, "--batch", help="Batch size."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Evaluate a seeded random subset of this many images."),
    json_file: Optional[Path] = typer.Option(None, "--json", help="Write the report as JSON to this file ('-' for stdout)."),
    confusion: Optional[Path] = typer.Option(None, "--confusion", help="Also draw the confusion matrix to this PNG."),
    threads: Optional[int] = typer.Option(None, "--threads", help="onnxruntime intra-op threads (default: all cores)."),
    arch: Optional[str] = ArchOpt,
    model: Optional[str] = ModelOpt,
    model_kwargs: Optional[str] = ModelKwargsOpt,
    input_size: Optional[int] = InputSizeOpt,
    trust_pickle: bool = TrustPickleOpt,
    resize: Optional[int] = ResizeOpt,
    crop: Optional[int] = CropOpt,
    mean: Optional[str] = MeanOpt,
    std: Optional[str] = StdOpt,
):
    """Accuracy on an ImageFolder: top-1, top-5, per class, confusion matrix, throughput.

    Preprocessing comes from the ONNX metadata (checkpoints: the layout's defaults or
    --resize/--crop/--mean/--std) and equals torchvision's transforms.
    """
    from alexnet_deploy.evaluate import evaluate, write_confusion_png
    from alexnet_deploy.exporter.workflow import PreprocessingOptions, parse_triple
    from alexnet_deploy.fileio import check_writable

    to_stdout = json_file is not None and str(json_file) == "-"
    if json_file is not None and not to_stdout:
        check_writable(json_file, "JSON report")
    if confusion is not None:
        if confusion.suffix.lower() != ".png":
            raise InputError(f"--confusion {confusion} does not end in .png.", "name it *.png")
        check_writable(confusion, "confusion PNG")
    overrides = PreprocessingOptions(resize, crop, parse_triple(mean, "mean"), parse_triple(std, "std"))
    with progress_steps(to_stdout) as progress:
        report = evaluate(
            model_file, data, runtime=runtime, batch=batch, limit=limit, threads=threads, progress=progress,
            model_options=_model_options(arch, model, model_kwargs, input_size, trust_pickle), preprocessing=overrides,
        )
    if confusion is not None:
        write_confusion_png(report, confusion)
    if json_file is not None:
        _write_json(report.to_dict(), None if to_stdout else json_file)
    if not to_stdout:
        from alexnet_deploy.render import eval_table

        out.print(eval_table(report, confusion))


@app.command()
@handles_errors
def predict(
    model_file: Path = typer.Argument(..., metavar="MODEL.onnx", help="An exported ONNX model (FP32, FP16 or INT8)."),
    images: list[Path] = typer.Argument(..., metavar="IMAGE...", help="Image files, or folders of them."),
    topk: int = typer.Option(5, "--topk", help="How many classes to show per image."),
    as_json: bool = typer.Option(False, "--json", help="Print the predictions as JSON."),
    threads: Optional[int] = typer.Option(None, "--threads", help="onnxruntime intra-op threads."),
):
    """Label images: the top classes and their probabilities, with labels and preprocessing from the model file.

    Undecodable files are skipped and listed; no decodable image at all is an error.
    """
    from alexnet_deploy.predict import predict_files

    result = predict_files(model_file, images, topk=topk, threads=threads)
    if as_json:
        _write_json(result, None)
    else:
        for item in result["predictions"]:
            best = ", ".join(f"{escape(label)} {p:.1%}" for label, p in item["top"])
            out.print(f"{escape(item['image'])}: {best}")
    for skipped in result["skipped"]:
        err.print(f"skipped {skipped['image']}: {skipped['reason']}", markup=False)


@app.command()
@handles_errors
def package(
    model_file: Path = typer.Argument(..., metavar="MODEL", help="An ONNX model (onnxruntime backend) or a TensorRT engine with its sidecar (tensorrt backend)."),
    triton: Path = typer.Option(..., "--triton", help="The Triton model repository folder to write into."),
    name: str = typer.Option("alexnet", "--name", help="Model name in the repository (the folder name)."),
    max_batch: Optional[int] = typer.Option(None, "--max-batch", help="Triton's max_batch_size (default 64; engines: at most their profile's max)."),
    instances: int = typer.Option(1, "--instances", help="Model instances (instance_group count)."),
    no_dynamic_batching: bool = typer.Option(False, "--no-dynamic-batching", help="Do not let Triton batch concurrent requests."),
    force: bool = typer.Option(False, "--force", help="Replace an existing model of the same name."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
):
    """Write a Triton Inference Server model repository entry: config.pbtxt, labels.txt, 1/model.onnx or 1/model.plan."""
    from alexnet_deploy.triton import package_triton

    result = package_triton(model_file, triton, name, max_batch, instances, not no_dynamic_batching, force)
    if as_json:
        _write_json(result.to_dict(), None)
        return
    out.print(f"[green]wrote[/green] {escape(str(result.path))} ({result.backend} backend, max_batch_size {result.max_batch_size}, {result.labels} labels)")
    out.print(f"  serve it: tritonserver --model-repository {escape(str(Path(triton).resolve()))}", markup=False)


@app.command()
@handles_errors
def serve(
    model_file: Path = typer.Argument(..., metavar="MODEL.onnx", help="An exported ONNX model (FP32, FP16 or INT8)."),
    name: str = typer.Option("alexnet", "--name", help="The model's name in URLs: /v2/models/NAME/infer."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0 for every interface)."),
    port: int = typer.Option(8000, "--port", help="TCP port (0: any free port, printed at start)."),
    max_batch: int = typer.Option(32, "--max-batch", help="Most images the server batches into one model call."),
    max_delay_ms: float = typer.Option(5.0, "--max-delay-ms", help="How long a request may wait for others to batch with."),
    threads: Optional[int] = typer.Option(None, "--threads", help="onnxruntime intra-op threads."),
):
    """Serve the model over the KServe v2 / Triton HTTP protocol, batching concurrent requests; stop with Ctrl-C or SIGTERM."""
    from alexnet_deploy.serve import serve as run_server

    def ready(url: str) -> None:
        out.print(f"serving {escape(str(model_file))} as {escape(name)} at {url}/v2/models/{escape(name)}/infer", markup=True)
        sys.stdout.flush()

    run_server(model_file, name, host, port, max_batch, max_delay_ms, threads, ready)
    err.print("stopped", markup=False)


@app.command()
@handles_errors
def build(
    model_file: Path = typer.Argument(..., metavar="MODEL.onnx", help="A verified ONNX model: FP32 from export, FP16 or INT8 (--target tensorrt) from quantize."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Engine path (default: MODEL.engine), written with a MODEL.engine.json sidecar."),
    min_batch: int = typer.Option(1, "--min-batch", help="Smallest batch the engine accepts."),
    opt_batch: int = typer.Option(32, "--opt-batch", help="Batch the kernels are tuned for."),
    max_batch: int = typer.Option(128, "--max-batch", help="Largest batch the engine accepts."),
    timing_cache: Optional[Path] = typer.Option(None, "--timing-cache", help="Reuse and update this TensorRT timing cache (faster rebuilds)."),
    workspace_mb: Optional[int] = typer.Option(None, "--workspace-mb", help="Builder workspace limit in MiB (default: TensorRT's)."),
    check_only: bool = typer.Option(False, "--check-only", help="Only lint the ONNX for TensorRT (runs anywhere, no GPU); exit 1 on problems."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
):
    """Compile an ONNX model into a TensorRT engine (TensorRT 10 or 11, strongly typed: precision comes from the ONNX).

    First lints the ONNX for TensorRT's parser on the CPU: supported ops (LRN window odd
    1..15), Q/DQ zero points 0, no UINT8 Q/DQ, no INT32 DequantizeLinear, only the batch
    dimension dynamic, opset 9..24. A problem names the node and the rule and exits 1.
    """
    from alexnet_deploy.runtimes.tensorrt_engine import BatchProfile, build_engine

    with progress_steps(as_json) as progress:
        try:
            result = build_engine(model_file, output, BatchProfile(min_batch, opt_batch, max_batch), timing_cache, workspace_mb, check_only, progress)
        except CheckFailed:
            if check_only:
                _print_lint(model_file)
            raise
    if as_json:
        _write_json(result.to_dict(), None)
        return
    if check_only:
        out.print(f"[green]PASS[/green]  {escape(str(model_file))}: no TensorRT compatibility problems found")
        return
    profile = result.sidecar.profile
    out.print(f"[green]built[/green] {escape(str(result.engine))} in {result.seconds:.0f} s ({result.sidecar.precision}, batch {profile['min']}..{profile['max']} tuned for {profile['opt']}, TensorRT {result.sidecar.tensorrt_version}, {escape(result.sidecar.gpu_name)})")


def _print_lint(model_file: Path) -> None:
    """Every lint finding, one per line, on stderr (the error line names only the first)."""
    from alexnet_deploy.onnx_file import load_onnx
    from alexnet_deploy.runtimes.tensorrt_lint import lint_onnx

    for finding in lint_onnx(load_onnx(model_file)):
        err.print(f"  {finding}", markup=False)


@app.command()
@handles_errors
def bench(
    inputs: Optional[list[Path]] = typer.Argument(None, metavar="INPUT...", help="Checkpoints (torch runtimes), ONNX files of any precision, TensorRT engines."),
    runtime: str = typer.Option("torch,ort", "--runtime", help="Comma list of: torch, torch-compile, torch-cuda, torch-cuda-fp16, ort, ort-cuda, ort-trt, trt."),
    batch: str = typer.Option("1,8,32", "--batch", help="Batch sizes, comma separated."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch and onnxruntime (default: theirs)."),
    warmup: float = typer.Option(1.0, "--warmup", help="Warm-up seconds per combination (not measured)."),
    duration: float = typer.Option(3.0, "--duration", help="Measured seconds per combination."),
    iterations: Optional[int] = typer.Option(None, "--iterations", help="Measure exactly this many runs instead of --duration."),
    io: str = typer.Option("host", "--io", help="host: numpy in, logits back (end to end). device: inputs already on the GPU, model time only."),
    json_file: Optional[Path] = typer.Option(None, "--json", help="Write machine + results as JSON ('-' for stdout)."),
    csv_file: Optional[Path] = typer.Option(None, "--csv", help="Write the results as CSV."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Draw throughput as a PNG bar chart."),
    arch: Optional[str] = ArchOpt,
    model: Optional[str] = ModelOpt,
    model_kwargs: Optional[str] = ModelKwargsOpt,
    input_size: Optional[int] = InputSizeOpt,
    trust_pickle: bool = TrustPickleOpt,
    suite: bool = typer.Option(False, "--suite", help="Run the standard suite (torch, torch.compile, onnxruntime FP32/FP16/INT8, plus CUDA/TensorRT where present) and update BENCHMARKS.md."),
    suite_dir: Path = typer.Option(Path("bench-work"), "--suite-dir", help="Where the suite keeps its generated models."),
    write: Path = typer.Option(Path("BENCHMARKS.md"), "--write", help="The Markdown file the suite updates."),
):
    """Latency (mean/p50/p90/p99/min/max) and throughput of every runtime x model x batch, in one table.

    Warm-up is excluded; GPU work is timed to completion. Speedup is against the first row
    with the same batch size. Runtimes that cannot run here are listed with the reason.
    """
    from alexnet_deploy.bench.harness import TimingSettings
    from alexnet_deploy.bench.runner import RUNTIMES, parse_batches, parse_list, run_bench
    from alexnet_deploy.fileio import atomic_write_bytes, check_writable

    runtimes = parse_list(runtime, "runtime", RUNTIMES)
    batches = parse_batches(batch)
    to_stdout = json_file is not None and str(json_file) == "-"
    for target, what, suffix in ((None if to_stdout else json_file, "JSON report", None), (csv_file, "CSV", ".csv"), (plot, "plot", ".png")):
        if target is not None:
            if suffix and target.suffix.lower() != suffix:
                raise InputError(f"{target} does not end in {suffix}.", f"name it *{suffix}")
            check_writable(target, what)
    settings = TimingSettings(warmup_s=warmup, duration_s=duration, iterations=iterations, io=io)
    if not suite and not inputs:
        raise InputError("bench needs at least one INPUT (checkpoint, ONNX or engine), or --suite.", "e.g. alexnet bench alexnet.pth alexnet.onnx --runtime torch,ort")
    if suite:
        if inputs or runtime != "torch,ort" or arch or model:
            raise InputError("--suite picks its own models and runtimes; INPUT, --runtime, --arch and --model do not apply.", "run `alexnet bench --suite` alone (timing options are fine)")
        check_writable(write, "benchmark report")
    with progress_steps(to_stdout) as progress:
        if suite:
            from alexnet_deploy.bench.suite import run_suite, write_suite

            report = run_suite(suite_dir, settings, threads, batches=batches if batch != "1,8,32" else (1, 32), progress=progress)
            write_suite(report, write)
        else:
            report = run_bench(inputs, runtimes, batches, settings, threads, _model_options(arch, model, model_kwargs, input_size, trust_pickle), progress)
    data = report.to_dict()
    from alexnet_deploy.bench import report as bench_report

    if csv_file is not None:
        atomic_write_bytes(csv_file, bench_report.to_csv(data).encode())
    if plot is not None:
        bench_report.plot_png(data, plot)
    if json_file is not None:
        _write_json(data, None if to_stdout else json_file)
    if not to_stdout:
        from alexnet_deploy.render import bench_table

        out.print(bench_table(data))
        for skip in report.skipped:
            err.print(f"skipped {skip['runtime']} {Path(skip['model']).name}: {skip['reason']}", markup=False)
        harness = report.harness
        if harness.get("overhead_pct_of_fastest_p50") is not None:
            out.print(f"harness overhead {1000 * harness['overhead_ms_per_iteration']:.1f} µs per iteration ({harness['overhead_pct_of_fastest_p50']:.3f}% of the fastest p50)")


@app.command()
@handles_errors
def quickstart(
    directory: Path = typer.Argument(Path("alexnet-quickstart"), help="Where to put the demo files."),
    force: bool = typer.Option(False, "--force", help="Use DIRECTORY even if it is not empty (its demo files are replaced)."),
):
    """Make a seeded AlexNet checkpoint (seed 001's layout, hand-written LRN), export it, verify it, say what next."""
    from alexnet_deploy.exporter.demo import CIFAR10, make_demo_checkpoint, make_sample_images
    from alexnet_deploy.exporter.workflow import export_checkpoint
    from alexnet_deploy.fileio import atomic_write_bytes

    if directory.exists() and not directory.is_dir():
        raise InputError(f"{directory} exists and is not a directory.", "choose another DIRECTORY")
    if directory.is_dir() and any(directory.iterdir()) and not force:
        raise InputError(f"{directory} is not empty.", "choose an empty or new DIRECTORY, or add --force")
    directory.mkdir(parents=True, exist_ok=True)
    checkpoint = directory / "alexnet.pth"
    labels = directory / "labels.txt"
    with progress_steps() as step:
        step("making a seeded checkpoint (seed 001 layout, 10 CIFAR-10 classes)")
        make_demo_checkpoint(checkpoint)
        atomic_write_bytes(labels, ("\n".join(CIFAR10) + "\n").encode())
        samples = directory / "samples"
        make_sample_images(samples)
        outcome = export_checkpoint(checkpoint, directory / "alexnet.onnx", labels=labels, images=samples, progress=step)
    from alexnet_deploy.render import export_table

    out.print(f"[bold]alexnet quickstart[/bold]: made {escape(str(checkpoint))}, {escape(str(labels))} and {escape(str(samples))}/, then exported and verified:\n")
    out.print(export_table(outcome.to_dict()))
    onnx_path = outcome.path
    out.print("\n[bold]Try next[/bold]")
    for line in (
        f"alexnet inspect {checkpoint}",
        f"alexnet inspect {onnx_path}",
        f"alexnet verify {onnx_path} --checkpoint {checkpoint} --images {samples}",
        "alexnet export YOUR.pth --labels YOUR_LABELS   # your own checkpoint",
    ):
        out.print("  " + line, markup=False)


def _version_callback(value: bool):
    if value:
        out.print(f"alexnet-deploy {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True, help="Show the version and exit."),
):
    """alexnet: export, verify, quantize, evaluate, build, benchmark and inspect AlexNet models. Add --debug anywhere to see tracebacks."""


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``alexnet`` and ``python -m alexnet_deploy``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in args:
        args.remove("--debug")
        os.environ[DEBUG_ENV] = "1"
    else:
        os.environ.pop(DEBUG_ENV, None)
    app(args=args, prog_name="alexnet")
