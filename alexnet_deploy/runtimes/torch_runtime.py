"""PyTorch: eager (the reference side of parity checks) or torch.compile, on the CPU or CUDA."""

from __future__ import annotations

import threading
from contextlib import contextmanager

import numpy as np

from alexnet_deploy.errors import DependencyError, require
from alexnet_deploy.runtimes.base import Runtime, RuntimeInfo


class TorchRuntime(Runtime):
    """An ``nn.Module`` (or TorchScript module) in eval mode under ``torch.no_grad``.

    ``device`` 'cuda' needs a visible GPU (DependencyError otherwise); ``half`` runs FP16
    weights and activations there (float32 in and out); ``compile`` wraps the module in
    ``torch.compile`` (compiled on the first call).
    """

    name = "torch"

    def __init__(self, module, input_size: int, label: str = "torch", device: str = "cpu", half: bool = False, compile: bool = False):
        super().__init__()
        self.torch = require("torch", "torch", "The torch runtime")
        if device == "cuda" and not self.torch.cuda.is_available():
            raise DependencyError("no CUDA GPU is visible to torch (torch.cuda.is_available() is False).", "run on a machine with an NVIDIA GPU, or use the CPU runtimes")
        if half and device != "cuda":
            raise DependencyError("FP16 in PyTorch is only offered on CUDA here (CPU half precision is slower than FP32).", "use --runtime torch for FP32 on the CPU")
        self.device = device
        self.half = half
        if device != "cpu" or half:
            import copy

            module = copy.deepcopy(module)  # moving/casting works in place: leave the caller's module as it was
        module = module.eval().to(device)
        if half:
            module = module.half()
        # One specialised graph per batch size (dynamic=False): the fastest code for each size measured.
        self.module = self.torch.compile(module, dynamic=False) if compile else module
        self.compiled = compile
        self.input_size = int(input_size)
        self._label = label

    def _info_impl(self) -> RuntimeInfo:
        return RuntimeInfo(
            "torch-compile" if self.compiled else "torch", self.device, "fp16" if self.half else "fp32", "input",
            (None, 3, self.input_size, self.input_size), details={"model": self._label, "torch": self.torch.__version__},
        )

    def run_device(self, batch):
        """Run a tensor already on the device; returns a tensor on the device (no host copies, no wait).

        FP32 on CUDA is IEEE FP32: PyTorch lets cuDNN convolutions use TF32 by default, which
        moved a model's logits by 8e-3 relative on an H200, 80x past verify's 1e-4.
        """
        with self.torch.no_grad(), _ieee_fp32(self.torch, self.device == "cuda" and not self.half):
            return self.module(batch.half() if self.half else batch)

    def _run_impl(self, batch: np.ndarray) -> np.ndarray:
        tensor = self.torch.from_numpy(batch).to(self.device)
        return self.run_device(tensor).float().cpu().numpy()

    def _close_impl(self) -> None:
        self.module = None


# The precision switches are process-wide: one FP32 run on CUDA at a time sets and restores them.
_PRECISION_LOCK = threading.Lock()


@contextmanager
def _ieee_fp32(torch, active: bool):
    """While active, convolutions and matrix products on CUDA compute in full FP32 (no TF32).

    Uses the ``fp32_precision`` settings where torch has them (2.9 and newer): after a process
    has set those, reading the older ``allow_tf32`` flags raises. Restored afterwards, also on
    errors; held under a lock, so two threads cannot restore each other's settings.
    """
    if not active:
        yield
        return
    conv, matmul = getattr(torch.backends.cudnn, "conv", None), torch.backends.cuda.matmul
    with _PRECISION_LOCK:
        if conv is not None and hasattr(conv, "fp32_precision") and hasattr(matmul, "fp32_precision"):
            targets = ((conv, "fp32_precision", "ieee"), (matmul, "fp32_precision", "ieee"))
        else:  # older torch: the allow_tf32 flags
            targets = ((torch.backends.cudnn, "allow_tf32", False), (matmul, "allow_tf32", False))
        before = [getattr(owner, name) for owner, name, _ in targets]
        try:
            for owner, name, value in targets:
                setattr(owner, name, value)
            yield
        finally:
            for (owner, name, _), value in zip(targets, before):
                setattr(owner, name, value)
