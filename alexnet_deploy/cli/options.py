"""Option types shared by the commands: ``Annotated`` aliases, Enums for choices, helpers to unpack them.

Every option that the user may leave out defaults to ``None``, so the library decides the
default and a command can tell "not given" from "given the default value".
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

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


# --json [FILE|-]: the same on every command that reports (see cli.app.normalise_json_flag).
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
TrustPickleOpt = Annotated[bool, typer.Option("--trust-pickle", metavar=FlagMetavar, help="Allow unpickling a whole saved nn.Module (runs code from the file: only for files you trust).", rich_help_panel="Model")]

# Preprocessing of a checkpoint's model (export writes it into the ONNX; eval applies it to checkpoints).
ResizeOpt = Annotated[Optional[int], typer.Option("--resize", help="Resize size before the center crop.", rich_help_panel="Preprocessing")]
CropOpt = Annotated[Optional[int], typer.Option("--crop", help="Center-crop size (= the model's input size).", rich_help_panel="Preprocessing")]
MeanOpt = Annotated[Optional[str], typer.Option("--mean", metavar="R,G,B", help="Normalize mean (e.g. 0.485,0.456,0.406).", rich_help_panel="Preprocessing")]
StdOpt = Annotated[Optional[str], typer.Option("--std", metavar="R,G,B", help="Normalize std (e.g. 0.229,0.224,0.225).", rich_help_panel="Preprocessing")]

ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", help="CPU threads for the runtime (default: the runtime's choice).")]


def flag(*names: str, help: str, panel: str | None = None):
    """A boolean flag (no value) for ``Annotated[bool, flag(...)]``."""
    return typer.Option(*names, metavar=FlagMetavar, help=help, rich_help_panel=panel)


def model_options(arch, model, model_kwargs, input_size, trust_pickle) -> ModelOptions:
    """The model flags as the library's ModelOptions."""
    return ModelOptions(value(arch), model, model_kwargs, input_size, trust_pickle)


def preprocessing_overrides(resize, crop, mean, std):
    """The preprocessing flags as the library's PreprocessingOverrides (R,G,B text parsed)."""
    from alexnet_deploy.record import PreprocessingOverrides, parse_triple

    return PreprocessingOverrides(resize, crop, parse_triple(mean, "mean"), parse_triple(std, "std"))
