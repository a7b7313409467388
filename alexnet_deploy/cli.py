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

app = typer.Typer(
    name="alexnet",
    help="Take trained PyTorch AlexNet checkpoints to production: export to ONNX with native LRN, verify parity, inspect.",
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


@contextmanager
def progress_steps(quiet: bool = False) -> Iterator:
    """A spinner on stderr showing the current step; yields the ``progress(message)`` callback."""
    if quiet or not err.is_terminal:
        yield lambda message: None
        return
    with err.status("starting") as status:
        yield lambda message: status.update(escape(f"{message} …"))


# Options shared by every command that turns a checkpoint into a network.
ArchOpt = typer.Option(None, "--arch", help="Force a built-in layout: torchvision, caffe-227, paper-224, paper-lrn, paper-hand-lrn, layers-fc, half-width.", rich_help_panel="Model")
ModelOpt = typer.Option(None, "--model", help="Your own class instead of a built-in layout: FILE.py:ClassName.", rich_help_panel="Model")
ModelKwargsOpt = typer.Option(None, "--model-kwargs", help="Constructor arguments for --model: key=value,... (Python literals).", rich_help_panel="Model")
InputSizeOpt = typer.Option(None, "--input-size", help="Input height/width in pixels (default: the layout's, e.g. 224 or 227).", rich_help_panel="Model")
TrustPickleOpt = typer.Option(False, "--trust-pickle", help="Allow unpickling a whole saved nn.Module (runs code from the file: only for files you trust).", rich_help_panel="Model")


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
    resize: Optional[int] = typer.Option(None, "--resize", help="Resize size before the center crop.", rich_help_panel="Metadata"),
    crop: Optional[int] = typer.Option(None, "--crop", help="Center-crop size (= the model's input size).", rich_help_panel="Metadata"),
    mean: Optional[str] = typer.Option(None, "--mean", help="Normalize mean, R,G,B (e.g. 0.485,0.456,0.406).", rich_help_panel="Metadata"),
    std: Optional[str] = typer.Option(None, "--std", help="Normalize std, R,G,B (e.g. 0.229,0.224,0.225).", rich_help_panel="Metadata"),
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
    model_file: Path = typer.Argument(..., metavar="MODEL.onnx", help="The exported ONNX model."),
    checkpoint: Path = typer.Option(..., "--checkpoint", "-c", help="The checkpoint it was exported from."),
    arch: Optional[str] = ArchOpt,
    model: Optional[str] = ModelOpt,
    model_kwargs: Optional[str] = ModelKwargsOpt,
    input_size: Optional[int] = InputSizeOpt,
    trust_pickle: bool = TrustPickleOpt,
    images: Optional[Path] = typer.Option(None, "--images", help="Also compare on these images, preprocessed from the model's metadata."),
    samples: int = typer.Option(8, "--samples", help="Number of seeded random inputs."),
    batch_sizes: str = typer.Option("1,7", "--batch-sizes", help="Batch sizes to run at, comma separated."),
    json_file: Optional[Path] = typer.Option(None, "--json", help="Write the report as JSON to this file ('-' for stdout)."),
):
    """Check that an ONNX model computes what its PyTorch checkpoint computes; exit 1 if not.

    FP32 passes when, on every sample, max |onnx - torch| / max |torch| <= 1e-4 and the
    cosine similarity of the logits >= 0.99999. On failure, names the first layer whose
    output diverges.
    """
    from alexnet_deploy.exporter.verify import parse_batch_sizes
    from alexnet_deploy.exporter.workflow import verify_checkpoint

    sizes = parse_batch_sizes(batch_sizes)
    if json_file is not None and str(json_file) != "-":
        from alexnet_deploy.fileio import check_writable

        check_writable(json_file, "JSON report")
    to_stdout = json_file is not None and str(json_file) == "-"
    with progress_steps(to_stdout) as step:
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
    """alexnet: export, verify and inspect AlexNet models. Add --debug anywhere to see tracebacks."""


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``alexnet`` and ``python -m alexnet_deploy``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in args:
        args.remove("--debug")
        os.environ[DEBUG_ENV] = "1"
    else:
        os.environ.pop(DEBUG_ENV, None)
    app(args=args, prog_name="alexnet")
