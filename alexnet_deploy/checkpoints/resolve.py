"""From a checkpoint file and the user's flags to one ready ``nn.Module``.

Combines loading (any format), layout detection or the user's ``--model`` class,
strict weight loading with a readable diff, and the input size, and says what it
decided so that ``export``, ``verify`` and ``inspect`` agree on it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from alexnet_deploy.errors import ExportError, LayoutError, ModelFileError
from alexnet_deploy.checkpoints.load import Checkpoint, load_checkpoint
from alexnet_deploy.checkpoints.layouts import (
    LAYOUTS,
    Layout,
    LayoutMatch,
    build_model,
    compare_shapes,
    default_preprocessing,
    detect_layout,
    format_diff,
    match_layout,
)
from alexnet_deploy.record import Preprocessing
from alexnet_deploy.checkpoints.options import ModelOptions
from alexnet_deploy.checkpoints.user_model import (
    class_count_param,
    instantiate,
    load_model_class,
    parse_model_kwargs,
)

# Sizes tried, in order, when a user class does not say which input it takes.
PROBE_SIZES = (224, 227)


@dataclass
class ResolvedModel:
    """A checkpoint turned into a module, with everything export and verify need to know.

    ``module`` is what gets exported (eager PyTorch); ``reference`` is what parity is
    checked against: the same module, or the TorchScript / pickled module the file held.
    """

    module: nn.Module
    reference: nn.Module
    name: str
    layout: Layout | None
    num_classes: int
    input_size: int
    preprocessing: Preprocessing
    checkpoint: Checkpoint
    notes: list[str] = field(default_factory=list)

    def example(self, batch: int = 2, seed: int = 0) -> torch.Tensor:
        """A seeded random input batch of the model's size."""
        generator = torch.Generator().manual_seed(seed)
        return torch.randn(batch, 3, self.input_size, self.input_size, generator=generator)


def _last_linear_classes(state_dict: dict) -> int | None:
    matrices = [v for k, v in state_dict.items() if k.endswith("weight") and v.ndim == 2]
    return int(matrices[-1].shape[0]) if matrices else None


def _load_strict(model: nn.Module, state_dict: dict, what: str) -> nn.Module:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state_dict.items()}
    diff = format_diff(*compare_shapes(expected, got), owner="the class")
    if diff:
        raise LayoutError(f"checkpoint does not fit {what}: {diff}.", "check the checkpoint, or the class and --model-kwargs")
    model.load_state_dict(state_dict, strict=True)
    return model.float().eval()


def _user_module(cls, kwargs_text: str | None, ckpt: Checkpoint) -> nn.Module:
    kwargs = parse_model_kwargs(kwargs_text)
    param = class_count_param(cls)
    classes = _last_linear_classes(ckpt.state_dict)
    if param and param not in kwargs and classes is not None:
        kwargs[param] = classes
    model = instantiate(cls, kwargs)
    return _load_strict(model, ckpt.state_dict, f"{cls.__name__}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})")


def _output_classes(module: nn.Module, size: int) -> int:
    """Run one input through ``module``; return its class count or raise ExportError why not."""
    with torch.no_grad():
        out = module(torch.zeros(1, 3, size, size))
    if isinstance(out, (tuple, list)):
        raise ExportError(
            f"the model returns {len(out)} outputs, not one logits tensor.",
            "export a class whose eval-mode forward returns only the logits",
        )
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 1:
        raise ExportError(
            f"the model's output has shape {list(getattr(out, 'shape', []))}, not [batch, classes].",
            "export a classifier whose forward returns logits of shape [N, num_classes]",
        )
    return int(out.shape[1])


def _fit_input_size(module: nn.Module, requested: int | None, default: int | None) -> tuple[int, int]:
    sizes = [requested] if requested else ([default] if default else list(PROBE_SIZES))
    failures = []
    for size in sizes:
        try:
            return size, _output_classes(module, size)
        except ExportError:
            raise
        except Exception as exc:  # a shape error inside the user's forward
            failures.append(f"{size}x{size}: {str(exc).splitlines()[0][:140]}")
    if requested:
        raise ExportError(f"the model does not accept a 3x{requested}x{requested} input ({failures[0]}).", "pass the --input-size the model was trained with")
    raise ExportError(f"cannot find an input size the model accepts ({'; '.join(failures)}).", "pass --input-size N")


def layout_by_forward(ckpt: Checkpoint) -> LayoutMatch | None:
    """The one layout whose network computes what the file's own module computes, if exactly one does.

    Weight shapes alone cannot tell seed 000 (pad 0 at 227) from paper-224 (pad 2 at 224);
    a trusted TorchScript or pickled module can: run each candidate and the module on the
    same probe input and keep the candidate whose logits match.
    """
    exact = [m for m in (match_layout(layout, ckpt.state_dict) for layout in LAYOUTS.values()) if m.exact]
    if len(exact) < 2 or ckpt.module is None:
        return exact[0] if len(exact) == 1 else None
    agreeing = []
    for found in exact:
        size = found.layout.input_size
        probe = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
        try:
            with torch.no_grad():
                want = ckpt.module(probe)
                got = build_model(found.layout, ckpt.state_dict, found.num_classes)(probe)
        except Exception:  # the file's module does not take this layout's input size: not this layout
            continue
        if isinstance(want, torch.Tensor) and want.shape == got.shape and torch.allclose(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()) + 1e-6):
            agreeing.append(found)
    return agreeing[0] if len(agreeing) == 1 else None


def resolve_model(checkpoint: Path, options: ModelOptions | None = None) -> ResolvedModel:
    """Load ``checkpoint`` and build the module it belongs to, strictly; errors name the fix."""
    options = options or ModelOptions()
    arch, model_spec, model_kwargs = options.arch, options.model, options.model_kwargs
    input_size, trust_code = options.input_size, options.trusted
    if arch and model_spec:
        raise ModelFileError("--arch and --model both choose the network.", "pass only one of them")
    if input_size is not None and not 16 <= input_size <= 2048:
        raise ExportError(f"--input-size {input_size} is out of range.", "use the image size the model was trained on, e.g. 224")
    cls = load_model_class(model_spec) if model_spec else None
    extra_classes = {cls.__name__: cls} if cls else {}
    # A pickled model saved after ``from model import Net`` refers to module "model".
    extra_modules = {Path(model_spec.rpartition(":")[0]).stem: sys.modules[cls.__module__]} if cls else {}
    ckpt = load_checkpoint(Path(checkpoint), trust_code=trust_code, extra_classes=extra_classes, extra_modules=extra_modules)
    notes: list[str] = []
    layout: Layout | None = None

    if model_spec:
        module = _user_module(cls, model_kwargs, ckpt)
        reference = ckpt.module if ckpt.module is not None else module
        name = f"custom:{type(module).__name__}"
    else:
        decided_by_forward = False
        try:
            match = detect_layout(ckpt.state_dict, arch)
        except LayoutError as exc:
            if ckpt.format == "torchscript" and ckpt.module is None and not arch and "layouts with identical weight shapes" in exc.problem:
                raise LayoutError(exc.problem, f"{exc.fix}; or, if you trust the file, --trust-code lets the archive's own output decide") from None
            if ckpt.module is None or arch:
                raise
            match = layout_by_forward(ckpt)
            decided_by_forward = match is not None
            if match is None and ckpt.format == "torchscript":
                raise
        if decided_by_forward:
            notes.append(f"the weights fit several layouts; {match.layout.name} is the one whose output matches the file's own module")
        if match is not None:
            layout = match.layout
            module = build_model(layout, ckpt.state_dict, match.num_classes)
            name = layout.name
        elif ckpt.format == "torchscript":  # only reached with a module, i.e. with --trust-code
            raise LayoutError(
                "this TorchScript archive is not a built-in AlexNet layout, and TorchScript cannot be exported directly.",
                "pass --model FILE.py:ClassName with the eager class it was scripted from",
            )
        else:
            module = ckpt.module
            name = f"custom:{type(module).__name__}"
        reference = ckpt.module if ckpt.module is not None else module
        if ckpt.format == "torchscript" and ckpt.module is None:
            notes.append("the archive's TorchScript program was not run: its weights were read without it (--trust-code also checks parity against it)")
        if ckpt.module is not None and match is not None:
            notes.append(f"the file held a {ckpt.format}; exporting the {layout.name} layout with its weights and checking parity against the file's own module")

    size, classes = _fit_input_size(module, input_size, layout.input_size if layout else None)
    if input_size and layout and input_size != layout.input_size:
        notes.append(f"input size {input_size} overrides the layout's {layout.input_size}")
    preprocessing = default_preprocessing(layout, size)
    return ResolvedModel(module, reference, name, layout, classes, size, preprocessing, ckpt, notes)

