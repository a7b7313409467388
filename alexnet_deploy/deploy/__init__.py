"""Deploying beyond one process: Triton model repositories, KServe InferenceServices, Ray batch inference.

Public API: ``package_triton`` / ``TritonModel``; ``inference_service`` (a KServe manifest as a
dict); ``predict_ray`` / ``eval_ray`` (need the ``ray`` extra).
"""

from alexnet_deploy._lazy import lazy_exports

_NAMES = {"package_triton": "triton", "TritonModel": "triton", "inference_service": "kserve", "predict_ray": "ray_batch", "eval_ray": "ray_batch"}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
