"""Parity and agreement of an ONNX model with its reference, and the metrics behind them.

Public API: ``verify_checkpoint`` (against PyTorch, needs torch), ``verify_against_onnx``
(against the FP32 ONNX, torch-free), ``verify_parity`` / ``VerifyReport``,
``compare_logits`` / ``LogitComparison`` (numpy only).
"""

from alexnet_deploy._lazy import lazy_exports

_NAMES = {
    "verify_checkpoint": "jobs", "verify_against_onnx": "jobs",
    "verify_parity": "parity", "VerifyReport": "parity",
    "compare_logits": "metrics", "LogitComparison": "metrics",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
