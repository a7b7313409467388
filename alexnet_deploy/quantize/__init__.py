"""FP16 and INT8 variants of an FP32 ONNX model, compared with FP32 before they are written.

Public API: ``quantize_model`` / ``QuantizeOutcome``; ``recipes`` holds the graph
transformations (thin calls into onnxruntime's tools).
"""

from alexnet_deploy._lazy import lazy_exports

_NAMES = {"quantize_model": "pipeline", "QuantizeOutcome": "pipeline"}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
