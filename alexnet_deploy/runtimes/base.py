"""The runtime contract every backend implements (template method: public checks, ``_impl`` hooks)."""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from alexnet_deploy.errors import InputError


@dataclass(frozen=True)
class RuntimeInfo:
    """What a loaded model is and where it runs."""

    runtime: str
    device: str
    precision: str
    input_name: str
    input_shape: tuple  # (batch, 3, H, W); batch is None when dynamic
    min_batch: int = 1
    max_batch: int | None = None  # None: unlimited
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Runtime(abc.ABC):
    """A loaded model: ``info()`` says what it is, ``run(batch)`` returns float32 logits.

    Use as a context manager or call ``close()``. ``run`` checks the batch against the
    model's input (rank, channels, size, batch limits) once for every backend.
    """

    name = "runtime"

    def __init__(self):
        self._info: RuntimeInfo | None = None
        self._closed = False

    def info(self) -> RuntimeInfo:
        """Runtime, device, precision, input shape and batch limits."""
        if self._info is None:
            self._info = self._info_impl()
        return self._info

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits (float32, N x classes) for a float32 NCHW batch."""
        if self._closed:
            raise InputError(f"the {self.name} runtime was closed.", "load the model again")
        batch = self.check_batch(batch)
        return np.asarray(self._run_impl(batch), dtype=np.float32)

    def run_all(self, data: np.ndarray, batch_size: int = 32, advance=None) -> np.ndarray:
        """Logits for any number of inputs, run in chunks of ``batch_size`` within the model's limits.

        A chunk smaller than the model's minimum batch (a fixed-batch model's last chunk,
        say) is padded with copies; only real rows are returned. ``advance(n)`` is called
        after each chunk with its number of inputs.
        """
        info = self.info()
        size = max(1, int(batch_size))
        if info.max_batch is not None:
            size = min(size, info.max_batch)
        outputs = []
        for start in range(0, len(data), size):
            chunk = data[start:start + size]
            real = len(chunk)
            chunk = pad_rows(chunk, info.min_batch)
            outputs.append(self.run(chunk)[:real])
            if advance is not None:
                advance(real)
        return np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)

    def check_batch(self, batch) -> np.ndarray:
        """``batch`` as contiguous float32 NCHW, or InputError saying what does not fit."""
        info = self.info()
        array = np.asarray(batch)
        if array.dtype != np.float32:
            if not np.issubdtype(array.dtype, np.floating):
                raise InputError(f"input must be float32 NCHW, got dtype {array.dtype}.", "preprocess images first (alexnet_deploy.preprocess)")
            array = array.astype(np.float32)
        expected = tuple(info.input_shape[1:])
        if array.ndim != 4 or tuple(array.shape[1:]) != expected:
            raise InputError(f"input has shape {list(array.shape)}, the model takes [N, {', '.join(map(str, expected))}].", "resize/crop to the model's input size")
        n = array.shape[0]
        if n < info.min_batch or (info.max_batch is not None and n > info.max_batch):
            limit = f"{info.min_batch}..{info.max_batch}" if info.max_batch is not None else f">= {info.min_batch}"
            raise InputError(f"batch of {n} is outside this model's batch limits ({limit}).", "split or pad the batch")
        return np.ascontiguousarray(array)

    def close(self) -> None:
        """Release the model; further ``run`` calls fail."""
        if not self._closed:
            self._close_impl()
            self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @abc.abstractmethod
    def _info_impl(self) -> RuntimeInfo: ...

    @abc.abstractmethod
    def _run_impl(self, batch: np.ndarray) -> np.ndarray: ...

    def _close_impl(self) -> None:
        pass


def pad_rows(batch: np.ndarray, rows: int) -> np.ndarray:
    """``batch`` with copies of its last row appended until it has at least ``rows`` rows.

    For models that take a fixed (or minimum) batch: the caller keeps only the real rows' outputs.
    """
    missing = rows - len(batch)
    return batch if missing <= 0 else np.concatenate([batch, np.repeat(batch[-1:], missing, axis=0)])
