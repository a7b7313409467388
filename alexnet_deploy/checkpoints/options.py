"""How to turn a checkpoint into a network: the flags export, verify and inspect share (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ModelOptions:
    """``--arch``, ``--model``, ``--model-kwargs``, ``--input-size`` and ``--trust-pickle``; None keeps defaults."""

    arch: str | None = None
    model: str | None = None
    model_kwargs: str | None = None
    input_size: int | None = None
    trust_pickle: bool = False


# The built-in layouts' names, torch-free so the CLI can list them in --help without importing
# torch; tests assert they equal ``checkpoints.layouts.LAYOUTS``.
LAYOUT_NAMES = ("torchvision", "caffe-227", "paper-224", "paper-lrn", "paper-hand-lrn", "layers-fc", "half-width")
