"""PyTorch -> ONNX: LRN as one native node, the record inside, parity checked before writing.  [torch]

Public API: ``export_checkpoint`` / ``ExportOutcome`` (the whole export job),
``export_model`` (a resolved model to an ONNX proto), ``inspect_path`` (what a file holds).
"""

from alexnet_deploy._lazy import lazy_exports

_NAMES = {
    "export_checkpoint": "workflow", "ExportOutcome": "workflow",
    "export_model": "onnx_export", "ExportResult": "onnx_export",
    "inspect_path": "inspect",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
