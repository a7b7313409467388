"""TensorRT engines at run time: the sidecar that says what an engine needs, compatibility checks, ``TrtRuntime``.

Engines are built by ``alexnet_deploy.build.engine``; this module only reads and runs them.
One code path serves TensorRT 10 and 11 (name-based I/O, ``execute_async_v3``). TensorRT and
CUDA are imported lazily; device memory is handled through torch's CUDA tensors (torch is
already the toolkit's GPU dependency).
"""

from __future__ import annotations

import datetime
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alexnet_deploy.errors import DependencyError, InputError, RuntimeFailure, require
from alexnet_deploy.runtimes.base import Runtime, RuntimeInfo

TRT_INSTALL = "pip install 'alexnet-deploy[tensorrt]' (NVIDIA GPU and driver required)"


@dataclass
class EngineSidecar:
    """What an engine file needs to be used correctly, stored next to it as JSON."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    profile: dict[str, int]
    input_name: str
    output_name: str
    input_shape: list[int]  # C, H, W
    labels: list[str]
    preprocessing: dict[str, Any]
    source_onnx: str = ""
    source_onnx_sha256: str = ""
    engine_sha256: str = ""
    toolkit_version: str = ""
    built: str = field(default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sidecar_path(engine: Path) -> Path:
    """``model.engine`` -> ``model.engine.json``."""
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def read_sidecar(engine: Path) -> EngineSidecar:
    """The sidecar of ``engine``; InputError when it is missing or damaged."""
    path = sidecar_path(engine)
    if not path.is_file():
        raise InputError(f"{engine} has no sidecar {path.name} (TensorRT version, GPU, batch profile, labels).", "rebuild it with `alexnet build MODEL.onnx`, which writes both")
    try:
        return EngineSidecar(**json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise InputError(f"{path} is damaged ({exc}).", "rebuild the engine with `alexnet build MODEL.onnx`") from None


def check_compatible(sidecar: EngineSidecar, tensorrt_version: str, compute_capability: str, gpu_name: str = "") -> None:
    """InputError unless an engine built as ``sidecar`` says can run with this TensorRT on this GPU.

    Engines are specific to the exact TensorRT version and to the GPU's compute capability.
    """
    if sidecar.tensorrt_version != tensorrt_version:
        raise InputError(
            f"the engine was built with TensorRT {sidecar.tensorrt_version}; this machine has TensorRT {tensorrt_version}.",
            "rebuild it here with `alexnet build MODEL.onnx` (engines are not portable across TensorRT versions)",
        )
    if sidecar.compute_capability != compute_capability:
        raise InputError(
            f"the engine was built for a GPU of compute capability {sidecar.compute_capability} ({sidecar.gpu_name}); this GPU is {compute_capability} ({gpu_name}).",
            "rebuild it on this GPU with `alexnet build MODEL.onnx`",
        )


def tensorrt_module():
    return require("tensorrt", "tensorrt", "Building or running a TensorRT engine")


def cuda_device() -> tuple[str, str]:
    """(GPU name, compute capability) of CUDA device 0; DependencyError when there is none."""
    torch = require("torch", "tensorrt", "Building or running a TensorRT engine")
    if not torch.cuda.is_available():
        raise DependencyError("no NVIDIA GPU is visible (torch.cuda.is_available() is False), so TensorRT cannot run here.", "run on a machine with an NVIDIA GPU and driver; the CPU runtimes are --runtime torch,ort")
    major, minor = torch.cuda.get_device_capability(0)
    return torch.cuda.get_device_name(0), f"{major}.{minor}"



class TrtRuntime(Runtime):
    """A TensorRT engine on CUDA device 0; float32 NCHW in, float32 logits out (``io='host'``)."""

    name = "trt"

    def __init__(self, engine: Path):
        super().__init__()
        engine = Path(engine)
        from alexnet_deploy.onnx_file import check_input_file

        check_input_file(engine, "engine")
        self.sidecar = read_sidecar(engine)
        trt = tensorrt_module()
        gpu_name, capability = cuda_device()
        check_compatible(self.sidecar, trt.__version__, capability, gpu_name)
        import torch

        self.torch = torch
        data = engine.read_bytes()
        if self.sidecar.engine_sha256 and hashlib.sha256(data).hexdigest() != self.sidecar.engine_sha256:
            raise InputError(f"{engine} does not match its sidecar {sidecar_path(engine).name} (sha256 differs).", "rebuild it with `alexnet build MODEL.onnx`")
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise InputError(f"TensorRT could not load {engine} (damaged file or incompatible build).", "rebuild it with `alexnet build MODEL.onnx`")
        self.context = self.engine.create_execution_context()
        self._label = engine.name
        self._dtypes = {trt.float32: torch.float32, trt.float16: torch.float16}
        self._trt = trt

    def _info_impl(self) -> RuntimeInfo:
        profile = self.sidecar.profile
        return RuntimeInfo(
            runtime="trt", device="cuda", precision=self.sidecar.precision, input_name=self.sidecar.input_name,
            input_shape=(None, *self.sidecar.input_shape), min_batch=profile["min"], max_batch=profile["max"],
            details={"model": self._label, "gpu": self.sidecar.gpu_name, "tensorrt": self.sidecar.tensorrt_version, "opt_batch": profile["opt"]},
        )

    def _torch_dtype(self, name: str):
        dtype = self._dtypes.get(self.engine.get_tensor_dtype(name))
        if dtype is None:
            raise InputError(f"the engine's tensor {name} has type {self.engine.get_tensor_dtype(name)}, which this runtime does not handle.", "export with float32 or float16 input and output")
        return dtype

    def run_device(self, batch):
        """Enqueue a CUDA tensor on torch's current stream; returns the output tensor without waiting.

        The caller synchronizes (``run`` copies to the host; the bench harness records CUDA
        events on the same stream), so device timing covers exactly the engine's work.
        """
        torch = self.torch
        inp, out = self.sidecar.input_name, self.sidecar.output_name
        batch = batch.to(self._torch_dtype(inp)).contiguous()  # e.g. an engine with FP16 input
        if not self.context.set_input_shape(inp, tuple(batch.shape)):
            raise InputError(f"batch shape {tuple(batch.shape)} is outside the engine's profile {self.sidecar.profile}.", "split the batch, or rebuild with a larger --max-batch")
        result = torch.empty(tuple(self.context.get_tensor_shape(out)), dtype=self._torch_dtype(out), device="cuda")
        self.context.set_tensor_address(inp, batch.data_ptr())
        self.context.set_tensor_address(out, result.data_ptr())
        if not self.context.execute_async_v3(torch.cuda.current_stream().cuda_stream):
            raise RuntimeFailure("TensorRT failed to run the engine (execute_async_v3 returned False).", "check the messages above; rerun with --debug")
        return result

    def _run_impl(self, batch: np.ndarray) -> np.ndarray:
        device_batch = self.torch.from_numpy(batch).cuda()
        return self.run_device(device_batch).float().cpu().numpy()  # .cpu() waits for the stream

    def _close_impl(self) -> None:
        del self.context, self.engine
