"""Runtimes behind one small interface: load, describe, run a numpy batch, close.

Public API: ``Runtime`` / ``RuntimeInfo`` (the contract), ``open_runtime`` (an ONNX file by runtime name),
``OrtRuntime`` (torch-free), ``OpenVinoRuntime`` (the ``openvino`` extra), ``TorchRuntime`` (needs torch),
``TrtRuntime`` (needs TensorRT and a GPU). Each runtime module imports its framework lazily, so ``alexnet_deploy.runtimes`` and
the onnxruntime runtime work without torch (or openvino) installed.

``open_runtime`` is the one place an ONNX file becomes a runtime by name: ``Classifier``,
``predict``, ``eval``, ``verify``, ``bench`` (and serve) all call it, so every command
accepts the same names.
"""

from __future__ import annotations

from pathlib import Path

from alexnet_deploy._lazy import lazy_exports
from alexnet_deploy.runtimes.base import Runtime, RuntimeInfo

# Names for running an ONNX file. A suffix names a precision chosen at run time (from the FP32 file).
ONNX_RUNTIMES = ("ort", "ort-cuda", "ort-trt", "openvino", "openvino-bf16")
CPU_ONNX_RUNTIMES = ("ort", "openvino", "openvino-bf16")


def split_name(name: str, precision: str | None = None) -> tuple[str, str | None]:
    """'openvino-bf16' -> ('openvino', 'bf16'); a separate ``precision`` must not contradict the suffix."""
    from alexnet_deploy.errors import InputError

    if name not in ONNX_RUNTIMES:
        raise InputError(f"unknown runtime {name!r} for an ONNX model.", f"choose from {', '.join(ONNX_RUNTIMES)}")
    if name == "openvino-bf16":
        if precision not in (None, "bf16"):
            raise InputError(f"--runtime openvino-bf16 and precision {precision} contradict each other.", "drop one of them")
        return "openvino", "bf16"
    return name, precision


def open_runtime(path: Path | str | bytes, name: str = "ort", threads: int | None = None, precision: str | None = None) -> Runtime:
    """An ONNX model (path or bytes) loaded in runtime ``name`` (see ONNX_RUNTIMES).

    ``precision`` None runs the file's own precision; 'bf16' (openvino only) runs an FP32
    file in BF16 where the CPU has it. onnxruntime reports the precision its file's
    record states. Errors: InputError (bad file or name), DependencyError (not installable
    or not offered here: exit 4).
    """
    from alexnet_deploy.errors import InputError

    base, precision = split_name(name, precision)
    if base == "openvino":
        from alexnet_deploy.runtimes.openvino import OpenVinoRuntime

        return OpenVinoRuntime(path, precision=precision, threads=threads)
    from alexnet_deploy.runtimes.ort import OrtRuntime

    if precision not in (None,) and not isinstance(path, bytes):
        recorded = _recorded_precision(path)
        if recorded is not None and precision != recorded:
            raise InputError(f"onnxruntime runs a file in its own precision ({recorded}), not {precision}.", "quantize a file of that precision, or use --runtime openvino-bf16 for bf16")
    record_precision = precision or (None if isinstance(path, bytes) else _recorded_precision(path))
    device = {"ort": "cpu", "ort-cuda": "cuda", "ort-trt": "tensorrt"}[base]
    return OrtRuntime(path, threads=threads, precision=record_precision, device=device)


def _recorded_precision(path) -> str | None:
    from alexnet_deploy.onnx_file import load_onnx
    from alexnet_deploy.record import read_record_or_none

    record = read_record_or_none(load_onnx(Path(path), load_weights=False), str(path))
    return record.precision if record else None


_NAMES = {"OrtRuntime": "ort", "OpenVinoRuntime": "openvino", "TorchRuntime": "torch_runtime", "TrtRuntime": "tensorrt"}
__all__ = ["Runtime", "RuntimeInfo", "open_runtime", "ONNX_RUNTIMES", "CPU_ONNX_RUNTIMES", *sorted(_NAMES)]
_lazy_getattr, _lazy_dir = lazy_exports(__name__, _NAMES)


def __getattr__(name: str):
    return _lazy_getattr(name)


def __dir__() -> list[str]:
    return sorted(__all__)
