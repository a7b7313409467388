"""Runtimes behind one small interface: load, describe, run a numpy batch, close.

Each runtime module imports its framework lazily, so ``alexnet_deploy.runtimes`` and
the onnxruntime runtime work without torch installed.
"""

from alexnet_deploy.runtimes.base import Runtime, RuntimeInfo

__all__ = ["Runtime", "RuntimeInfo"]
