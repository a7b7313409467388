"""Runtimes behind one small interface: load, describe, run a numpy batch, close.

Public API: ``Runtime`` / ``RuntimeInfo`` (the contract), ``OrtRuntime`` (torch-free),
``TorchRuntime`` (needs torch), ``TrtRuntime`` (needs TensorRT and a GPU). Each runtime
module imports its framework lazily, so this package works without torch installed.
"""

from alexnet_deploy._lazy import lazy_exports
from alexnet_deploy.runtimes.base import Runtime, RuntimeInfo

_NAMES = {"OrtRuntime": "ort", "TorchRuntime": "torch_runtime", "TrtRuntime": "tensorrt"}
__all__ = ["Runtime", "RuntimeInfo", *sorted(_NAMES)]
_lazy_getattr, _lazy_dir = lazy_exports(__name__, _NAMES)


def __getattr__(name: str):
    return _lazy_getattr(name)


def __dir__() -> list[str]:
    return sorted(__all__)
