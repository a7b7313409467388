"""Deploying beyond one process: Triton model repositories (and, later, KServe and Ray).

Public API: ``package_triton`` / ``TritonModel``.
"""

from alexnet_deploy._lazy import lazy_exports

_NAMES = {"package_triton": "triton", "TritonModel": "triton"}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
