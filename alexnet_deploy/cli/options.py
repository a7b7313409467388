"""Option types shared by the commands: ``Annotated`` aliases, Enums for choices, helpers to unpack them.

Every option that the user may leave out defaults to ``None``, so the library decides the
default and a command can tell "not given" from "given the default value".
"""

from __future__ import annotations

import functools
import inspect
import typing
from enum import Enum
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from alexnet_deploy.checkpoints.options import LAYOUT_NAMES, ModelOptions


def _choices(name: str, values) -> type[Enum]:
    """A str Enum whose members are ``values`` (so --help lists them and Typer checks them)."""
    return Enum(name, {value.replace("-", "_"): value for value in values}, type=str)


Arch = _choices("Arch", LAYOUT_NAMES)
Precision = _choices("Precision", ("fp16", "int8", "int8-dynamic"))
Method = _choices("Method", ("minmax", "entropy", "percentile"))
Target = _choices("Target", ("cpu", "tensorrt"))
EvalRuntime = _choices("EvalRuntime", ("ort", "openvino", "openvino-bf16", "torch"))
# Runtimes that run an ONNX file on the CPU (runtimes.CPU_ONNX_RUNTIMES); openvino-bf16: the FP32 file in BF16.
OnnxRuntime = _choices("OnnxRuntime", ("ort", "openvino", "openvino-bf16"))
TritonBackend = _choices("TritonBackend", ("onnxruntime", "openvino"))
IoMode = _choices("IoMode", ("host", "device"))


def value(choice: Enum | None) -> str | None:
    """The plain string of an Enum option (None stays None)."""
    return None if choice is None else choice.value


# --json [FILE|-]: the same on every command that reports (see cli.app.normalise_optional_flags).
JsonOpt = Annotated[Optional[Path], typer.Option(
    "--json", metavar="[FILE.json|-]",
    help="Write the report as JSON: '--json' or '--json -' prints it to stdout (and nothing else); '--json FILE.json' writes the file and still prints the table.",
)]
FlagMetavar = ""  # boolean flags take no value: show none in --help

# How a checkpoint becomes a network (export, verify, inspect, eval, bench).
ArchOpt = Annotated[Optional[Arch], typer.Option("--arch", help="Force a built-in layout (when the checkpoint does not decide).", rich_help_panel="Model")]
ModelOpt = Annotated[Optional[str], typer.Option("--model", metavar="FILE.py:CLASS", help="Your own class instead of a built-in layout.", rich_help_panel="Model")]
ModelKwargsOpt = Annotated[Optional[str], typer.Option("--model-kwargs", metavar="K=V,...", help="Constructor arguments for --model (Python literals).", rich_help_panel="Model")]
InputSizeOpt = Annotated[Optional[int], typer.Option("--input-size", help="Input height/width in pixels (default: the layout's, e.g. 224 or 227).", rich_help_panel="Model")]
TrustCodeOpt = Annotated[bool, typer.Option(
    "--trust-code", metavar=FlagMetavar, rich_help_panel="Model",
    help="Run code from this file: TorchScript programs, and pickled models built only from torch.nn layers, a few torchvision classifiers and your --model file's classes (never torch.fx/export/jit); only for files you trust.",
)]


def _deprecated_trust_pickle(given: bool) -> bool:
    if given:
        from alexnet_deploy.cli.app import err

        err.print("note: --trust-pickle is deprecated; use --trust-code", markup=False)
    return given


# The old name of --trust-code, kept so existing commands keep working.
TrustPickleOpt = Annotated[bool, typer.Option("--trust-pickle", hidden=True, callback=_deprecated_trust_pickle, help="Deprecated name of --trust-code.")]

# Preprocessing of a checkpoint's model (export writes it into the ONNX; eval applies it to checkpoints).
ResizeOpt = Annotated[Optional[int], typer.Option("--resize", help="Resize size before the center crop.", rich_help_panel="Preprocessing")]
CropOpt = Annotated[Optional[int], typer.Option("--crop", help="Center-crop size (= the model's input size).", rich_help_panel="Preprocessing")]
MeanOpt = Annotated[Optional[str], typer.Option("--mean", metavar="R,G,B", help="Normalize mean (e.g. 0.485,0.456,0.406).", rich_help_panel="Preprocessing")]
StdOpt = Annotated[Optional[str], typer.Option("--std", metavar="R,G,B", help="Normalize std (e.g. 0.229,0.224,0.225).", rich_help_panel="Preprocessing")]

# --runtime for commands that run an ONNX file (predict, serve).
OnnxRuntimeOpt = Annotated[Optional[OnnxRuntime], typer.Option(
    "--runtime", help="ort (default), openvino (the file's precision), openvino-bf16 (an FP32 file in BF16, CPUs with native BF16; pip install 'alexnet-deploy\\[openvino]').",
)]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", help="CPU threads for the runtime (default: the runtime's choice).")]
# Image decoding (predict, eval, bench --e2e): threads that decode and preprocess ahead of the model.
WorkersOpt = Annotated[Optional[int], typer.Option("--workers", help="Threads that decode and preprocess images while the model runs (default: one per CPU).")]
# Image folders (predict, eval, quantize, optimize): whether symlinks may lead out of the folder.
FollowLinksOpt = Annotated[bool, typer.Option(
    "--follow-links", metavar="",
    help="Follow symlinks in image folders, also out of them (default: links to folders, and links to files outside the folder, are left out and listed).",
)]


def flag(*names: str, help: str, panel: str | None = None):
    """A boolean flag (no value) for ``Annotated[bool, flag(...)]``."""
    return typer.Option(*names, metavar=FlagMetavar, help=help, rich_help_panel=panel)


def _option_group(parameter: str, options: dict[str, tuple[object, object]], build: Callable[[dict], object]):
    """A decorator that gives a command the ``options`` (name -> (Annotated type, default)) and
    hands them to it as one ``parameter`` built by ``build``: the flags are declared once here,
    not in every command that takes them."""

    def decorate(function):
        signature = inspect.signature(function)
        # Resolved annotations (the modules use `from __future__ import annotations`), so Typer
        # sees the Annotated option declarations of the kept parameters too.
        hints = typing.get_type_hints(function, include_extras=True)
        kept = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values() if p.name != parameter]
        added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation) for name, (annotation, default) in options.items()]

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            kwargs[parameter] = build({name: kwargs.pop(name) for name in options})
            return function(*args, **kwargs)

        wrapper.__signature__ = signature.replace(parameters=kept + added)
        wrapper.__annotations__ = {**{k: v for k, v in hints.items() if k != parameter}, **{name: annotation for name, (annotation, _) in options.items()}}
        return wrapper

    return decorate


def _model_options(values: dict) -> ModelOptions:
    return ModelOptions(value(values["arch"]), values["model"], values["model_kwargs"], values["input_size"], values["trust_code"] or values["trust_pickle"])


def _preprocessing_overrides(values: dict):
    from alexnet_deploy.parsing import parse_triple
    from alexnet_deploy.record import PreprocessingOverrides

    return PreprocessingOverrides(values["resize"], values["crop"], parse_triple(values["mean"], "--mean"), parse_triple(values["std"], "--std"))


# ``model_options: ModelOptions`` for commands that turn a checkpoint into a network.
with_model_options = _option_group("model_options", {
    "arch": (ArchOpt, None), "model": (ModelOpt, None), "model_kwargs": (ModelKwargsOpt, None),
    "input_size": (InputSizeOpt, None), "trust_code": (TrustCodeOpt, False), "trust_pickle": (TrustPickleOpt, False),
}, _model_options)

# ``preprocessing: PreprocessingOverrides`` for commands that preprocess for a checkpoint.
with_preprocessing = _option_group("preprocessing", {
    "resize": (ResizeOpt, None), "crop": (CropOpt, None), "mean": (MeanOpt, None), "std": (StdOpt, None),
}, _preprocessing_overrides)
