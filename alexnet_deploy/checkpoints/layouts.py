"""The AlexNet variants users bring, and which one a state_dict is.

Each :class:`Layout` names a network (module names, shapes, conv1 padding, input
size, where LRN runs) and the preprocessing its tutorial trained with. Detection
compares a state_dict's keys and shapes with every layout's, with the class count
read from the last layer; a checkpoint that fits several layouts is refused with a
message naming the ``--arch`` choices, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from alexnet_deploy.checkpoints.modules import FeaturesClassifierAlexNet, LayersFcAlexNet, PaperHandLRNAlexNet
from alexnet_deploy.errors import LayoutError
from alexnet_deploy.record import IMAGENET_MEAN, IMAGENET_STD, Preprocessing


@dataclass(frozen=True)
class Layout:
    """One known AlexNet variant: how to build it and how its tutorial preprocessed images."""

    name: str
    summary: str
    source: str
    input_size: int
    classifier_key: str
    build: Callable[[int], nn.Module]
    preprocessing: Preprocessing
    conv1: str
    lrn: str = "none"
    distinguishing: str = ""

    def describe(self) -> str:
        return f"{self.name}: {self.summary} ({self.source})"


_PAPER = (96, 256, 384, 384, 256)
LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        Layout(
            "torchvision", "torchvision.models.alexnet: 64-channel conv1, padding 2, adaptive avgpool",
            "torchvision", 224, "classifier.6.weight",
            lambda n: FeaturesClassifierAlexNet(n), Preprocessing(256, 224),
            conv1="64 ch, pad 2",
        ),
        Layout(
            "caffe-227", "96-channel conv1 with padding 0 at 227x227 input, no avgpool",
            "seed 000, Imagenette tutorial", 227, "classifier.6.weight",
            lambda n: FeaturesClassifierAlexNet(n, _PAPER, pad1=0, avgpool=False), Preprocessing(256, 227),
            conv1="96 ch, pad 0", distinguishing="the first Conv2d has padding=0 and images are cropped to 227",
        ),
        Layout(
            "paper-224", "96-channel conv1 with padding 2 at 224x224 input, torchvision-style keys, no LRN",
            "paper widths with torchvision's module names", 224, "classifier.6.weight",
            lambda n: FeaturesClassifierAlexNet(n, _PAPER, pad1=2, avgpool=False), Preprocessing(256, 224),
            conv1="96 ch, pad 2", distinguishing="the first Conv2d has padding=2 and images are 224",
        ),
        Layout(
            "paper-lrn", "96-channel paper AlexNet with nn.LocalResponseNorm(5, 1e-4, 0.75, k=2) after ReLU 1 and 2",
            "common tutorials", 224, "classifier.6.weight",
            lambda n: FeaturesClassifierAlexNet(n, _PAPER, pad1=2, avgpool=False, lrn=True), Preprocessing(256, 224),
            conv1="96 ch, pad 2", lrn="nn.LocalResponseNorm after ReLU 1 and 2, before pooling",
        ),
        Layout(
            "paper-hand-lrn", "C1..C5/F1..F3 paper AlexNet, hand-written paper-formula LRN, ReLU on the logits",
            "seed 001, CIFAR-10 paper reproduction", 224, "F3.weight",
            PaperHandLRNAlexNet,
            Preprocessing(224, 224, mean=(0.4915, 0.4823, 0.4468), std=(1.0, 1.0, 1.0)),
            conv1="96 ch, pad 2", lrn="paper LRN (k=2, n=5, alpha=1e-4, beta=0.75) after ReLU 1 and 2",
        ),
        Layout(
            "layers-fc", "layer1/layer2/layer3 + fc paper AlexNet; its LRN modules are never called",
            "seed 002, flowers tutorial", 224, "fc.6.weight",
            LayersFcAlexNet,
            Preprocessing(224, 224, mean=(0.4637, 0.4248, 0.3011), std=(0.2502, 0.2219, 0.2292), resize_mode="exact"),
            conv1="96 ch, pad 2", lrn="norm1/norm2 defined but not called by forward",
        ),
        Layout(
            "half-width", "48-channel conv1, padding 2, 2048-wide FC layers",
            "seed 003, flowers tutorial (class_indices.json)", 224, "classifier.6.weight",
            lambda n: FeaturesClassifierAlexNet(n, (48, 128, 192, 192, 128), pad1=2, hidden=2048, avgpool=False),
            Preprocessing(224, 224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resize_mode="exact"),
            conv1="48 ch, pad 2",
        ),
    )
}


def get_layout(name: str) -> Layout:
    """The layout called ``name``; LayoutError listing the names otherwise."""
    try:
        return LAYOUTS[name]
    except KeyError:
        raise LayoutError(f"unknown --arch {name!r}.", f"choose one of: {', '.join(LAYOUTS)}") from None


def _shapes(layout: Layout, num_classes: int) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = layout.build(num_classes)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _class_count(layout: Layout, state_dict: dict) -> int | None:
    weight = state_dict.get(layout.classifier_key)
    return int(weight.shape[0]) if weight is not None and weight.ndim == 2 else None


@dataclass
class LayoutMatch:
    """How well a state_dict fits one layout."""

    layout: Layout
    num_classes: int | None
    missing: list[str]
    unexpected: list[str]
    mismatched: list[tuple[str, tuple, tuple]]

    @property
    def exact(self) -> bool:
        return self.num_classes is not None and not (self.missing or self.unexpected or self.mismatched)

    @property
    def score(self) -> float:
        bad = len(self.missing) + len(self.unexpected) + len(self.mismatched)
        return -bad

    def diff(self, limit: int = 4) -> str:
        """A short readable diff of what does not fit."""
        return format_diff(self.missing, self.unexpected, self.mismatched, self.layout.name, limit)


def compare_shapes(expected: dict, got: dict) -> tuple[list[str], list[str], list[tuple[str, tuple, tuple]]]:
    """(missing, unexpected, mis-shaped (key, got, expected)) between two name -> shape maps."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    mismatched = [(k, got[k], expected[k]) for k in expected if k in got and got[k] != expected[k]]
    return missing, unexpected, mismatched


def format_diff(missing, unexpected, mismatched, owner: str, limit: int = 4) -> str:
    """``missing a, b; unexpected c; d has shape [..], OWNER needs [..]``, truncated; '' if nothing differs."""
    parts = []
    if missing:
        parts.append(f"missing {', '.join(missing[:limit])}" + (" ..." if len(missing) > limit else ""))
    if unexpected:
        parts.append(f"unexpected {', '.join(unexpected[:limit])}" + (" ..." if len(unexpected) > limit else ""))
    for key, got, want in mismatched[:limit]:
        parts.append(f"{key} has shape {list(got)}, {owner} needs {list(want)}")
    if len(mismatched) > limit:
        parts.append(f"... {len(mismatched) - limit} more mis-shaped")
    return "; ".join(parts)


def match_layout(layout: Layout, state_dict: dict) -> LayoutMatch:
    """Compare ``state_dict`` with ``layout`` (class count taken from the checkpoint)."""
    num_classes = _class_count(layout, state_dict)
    got = {k: tuple(v.shape) for k, v in state_dict.items()}
    return LayoutMatch(layout, num_classes, *compare_shapes(_shapes(layout, num_classes or 1000), got))


def ambiguity_message(names: list[str]) -> str:
    """Why several layouts fit, and what tells them apart."""
    return " and ".join(
        f"{LAYOUTS[n].name} ({LAYOUTS[n].conv1}, {LAYOUTS[n].input_size}x{LAYOUTS[n].input_size} input, {LAYOUTS[n].source})"
        for n in names
    )


def distinguishing_hint(names: list[str]) -> str:
    """What in the training script tells the candidate layouts apart."""
    hints = [f"{n} if {LAYOUTS[n].distinguishing}" for n in names if LAYOUTS[n].distinguishing]
    return "; ".join(hints) if hints else "the training script's model class tells which"


def detect_layout(state_dict: dict, arch: str | None = None) -> LayoutMatch:
    """The one layout ``state_dict`` fits (or ``arch``, checked strictly); LayoutError otherwise."""
    if arch is not None:
        found = match_layout(get_layout(arch), state_dict)
        if not found.exact:
            raise LayoutError(f"checkpoint does not fit --arch {arch}: {found.diff()}.", _FIX_HINT)
        return found
    matches = [match_layout(layout, state_dict) for layout in LAYOUTS.values()]
    exact = [m for m in matches if m.exact]
    if len(exact) == 1:
        return exact[0]
    if len(exact) > 1:
        names = [m.layout.name for m in exact]
        raise LayoutError(
            f"checkpoint fits {len(names)} layouts with identical weight shapes: {ambiguity_message(names)}.",
            f"pass --arch {' or --arch '.join(names)} ({distinguishing_hint(names)})",
        )
    best = max(matches, key=lambda m: m.score)
    overlap = len(set(state_dict) & set(_shapes(best.layout, best.num_classes or 1000)))
    if overlap < len(state_dict) // 2:
        sample = ", ".join(list(state_dict)[:4])
        raise LayoutError(
            f"checkpoint is not one of the built-in AlexNet layouts (its keys start {sample}).",
            "pass --model FILE.py:ClassName with the class it was trained with",
        )
    raise LayoutError(f"checkpoint is closest to layout {best.layout.name} but does not fit it: {best.diff()}.", _FIX_HINT)


_FIX_HINT = "check that this is the right checkpoint, or pass --model FILE.py:ClassName with the class it was trained with"


def build_model(layout: Layout, state_dict: dict, num_classes: int) -> nn.Module:
    """An eval-mode instance of ``layout`` with ``state_dict`` loaded strictly."""
    model = layout.build(num_classes)
    model.load_state_dict(state_dict, strict=True)
    return model.float().eval()


def default_preprocessing(layout: Layout | None, input_size: int) -> Preprocessing:
    """The layout's tutorial preprocessing, rescaled if the input size was overridden."""
    if layout is None:
        return Preprocessing.for_input_size(input_size, IMAGENET_MEAN, IMAGENET_STD)
    spec = layout.preprocessing
    if input_size == spec.crop:
        return spec
    if spec.resize_mode == "exact":
        return Preprocessing(input_size, input_size, spec.mean, spec.std, spec.interpolation, "exact")
    return Preprocessing.for_input_size(input_size, spec.mean, spec.std)
