"""PyTorch eager on the CPU (the reference side of parity checks)."""

from __future__ import annotations

import numpy as np

from alexnet_deploy.errors import require
from alexnet_deploy.runtimes.base import Runtime, RuntimeInfo


class TorchRuntime(Runtime):
    """An ``nn.Module`` (or TorchScript module) in eval mode under ``torch.no_grad``."""

    name = "torch"

    def __init__(self, module, input_size: int, label: str = "torch", device: str = "cpu"):
        super().__init__()
        self.torch = require("torch", "torch", "The torch runtime")
        self.device = device
        self.module = module.eval().to(device)
        self.input_size = int(input_size)
        self._label = label

    def _info_impl(self) -> RuntimeInfo:
        return RuntimeInfo("torch", self.device, "fp32", "input", (None, 3, self.input_size, self.input_size), details={"model": self._label})

    def _run_impl(self, batch: np.ndarray) -> np.ndarray:
        with self.torch.no_grad():
            out = self.module(self.torch.from_numpy(batch).to(self.device))
        return out.float().cpu().numpy()

    def _close_impl(self) -> None:
        self.module = None
