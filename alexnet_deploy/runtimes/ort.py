"""onnxruntime: CPU by default; CUDA and TensorRT providers with onnxruntime-gpu (torch-free)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from alexnet_deploy.errors import DependencyError, InputError, RuntimeFailure
from alexnet_deploy.runtimes.base import Runtime, RuntimeInfo

_DTYPES = {"tensor(float)": "fp32", "tensor(float16)": "fp16"}
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


def provider_problem(device: str) -> str | None:
    """Why onnxruntime here cannot use ``device`` ('cpu', 'cuda', 'tensorrt'), or None if it lists it."""
    import onnxruntime as ort

    wanted = PROVIDERS[device]
    if wanted in ort.get_available_providers():
        return None
    return f"this onnxruntime has no {wanted} (it offers {', '.join(ort.get_available_providers())}); install onnxruntime-gpu instead of onnxruntime"


class OrtRuntime(Runtime):
    """An ONNX model (path or serialized bytes) in an onnxruntime InferenceSession."""

    name = "ort"

    def __init__(self, model: Path | str | bytes, providers: list[str] | None = None, threads: int | None = None, precision: str | None = None, device: str = "cpu"):
        """``device`` 'cuda' or 'tensorrt' asks for that provider and fails (DependencyError)
        rather than silently running on the CPU when it does not load."""
        super().__init__()
        import onnxruntime as ort

        if device not in PROVIDERS:
            raise InputError(f"unknown onnxruntime device {device!r}.", f"use one of {', '.join(PROVIDERS)}")
        if device != "cpu":
            problem = provider_problem(device)
            if problem:
                raise DependencyError(problem, "pip install onnxruntime-gpu (and an NVIDIA driver with CUDA)")
            providers = [PROVIDERS[device]] + (["CUDAExecutionProvider"] if device == "tensorrt" else []) + ["CPUExecutionProvider"]

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = int(threads)
        source = model if isinstance(model, bytes) else str(model)
        self._label = "<memory>" if isinstance(model, bytes) else Path(model).name
        try:
            self.session = ort.InferenceSession(source, options, providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:
            raise InputError(f"onnxruntime cannot load {self._label} ({str(exc).splitlines()[0][:160]}).", "re-export it with `alexnet export`") from None
        active = self.session.get_providers()[0]
        if device != "cpu" and active != PROVIDERS[device]:
            raise DependencyError(
                f"onnxruntime could not start {PROVIDERS[device]} and fell back to {active} (missing CUDA/cuDNN/TensorRT libraries?).",
                "check `python -c 'import onnxruntime; onnxruntime.preload_dlls()'` and the CUDA/TensorRT library versions onnxruntime-gpu needs",
            )
        self._precision = precision
        self._input = self.session.get_inputs()[0]

    def _info_impl(self) -> RuntimeInfo:
        shape = tuple(d if isinstance(d, int) else None for d in self._input.shape)
        fixed = shape[0]
        return RuntimeInfo(
            runtime="ort",
            device=self.session.get_providers()[0].replace("ExecutionProvider", "").lower(),
            precision=self._precision or _DTYPES.get(self._input.type, self._input.type),
            input_name=self._input.name,
            input_shape=shape,
            min_batch=fixed or 1,
            max_batch=fixed,
            details={"providers": self.session.get_providers(), "model": self._label},
        )

    def _run_impl(self, batch: np.ndarray) -> np.ndarray:
        return self.run_outputs(batch, None)[0]

    def run_outputs(self, batch: np.ndarray, names: list[str] | None) -> list[np.ndarray]:
        """Named outputs (all when ``names`` is None; e.g. intermediate tensors exposed for debugging)."""
        try:
            return self.session.run(names, {self._input.name: self.check_batch(batch)})
        except InputError:
            raise
        except Exception as exc:  # a graph that loads but cannot run (damaged weights, bad shapes)
            raise RuntimeFailure(f"onnxruntime failed to run {self._label} ({str(exc).splitlines()[0][:160]}).", "re-export it with `alexnet export`") from None

    def _close_impl(self) -> None:
        del self.session
