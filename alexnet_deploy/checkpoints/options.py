"""How to turn a checkpoint into a network: the flags export, verify and inspect share (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ModelOptions:
    """``--arch``, ``--model``, ``--model-kwargs``, ``--input-size`` and ``--trust-code``; None keeps defaults.

    ``trust_pickle`` is the old name of ``trust_code`` (either one trusts the file).
    """

    arch: str | None = None
    model: str | None = None
    model_kwargs: str | None = None
    input_size: int | None = None
    trust_code: bool = False
    trust_pickle: bool = False

    @property
    def trusted(self) -> bool:
        return bool(self.trust_code or self.trust_pickle)


# The built-in layouts' names, torch-free so the CLI can list them in --help without importing
# torch; tests assert they equal ``checkpoints.layouts.LAYOUTS``.
LAYOUT_NAMES = ("torchvision", "caffe-227", "paper-224", "paper-lrn", "paper-hand-lrn", "layers-fc", "half-width")
