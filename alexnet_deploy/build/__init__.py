"""TensorRT engines from verified ONNX files, and the CPU-side lint that runs first.

Public API: ``build_engine`` / ``BatchProfile`` / ``BuildResult`` (needs TensorRT and a GPU),
``lint_onnx`` / ``LintFinding`` (runs anywhere). Running engines is ``runtimes.tensorrt``.
"""

from alexnet_deploy._lazy import lazy_exports

_NAMES = {
    "build_engine": "engine", "BatchProfile": "engine", "BuildResult": "engine",
    "lint_onnx": "lint", "LintFinding": "lint",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
