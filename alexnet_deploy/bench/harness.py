"""Timing one runtime at one batch size: warm-up excluded, GPU work timed to completion.

``io='host'`` (default) times what an application sees: a float32 numpy batch in, logits
back in host memory (GPU runtimes copy both ways and synchronize). ``io='device'`` puts
the batch on the GPU once and times only the model, with CUDA events, for runtimes that
can (``run_device``); CPU runtimes are timed the same way in both modes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from alexnet_deploy.errors import InputError


@dataclass
class TimingSettings:
    """How long to measure: warm-up seconds, then ``iterations`` runs or ``duration`` seconds."""

    warmup_s: float = 1.0
    duration_s: float = 3.0
    iterations: int | None = None
    io: str = "host"
    min_iterations: int = 5
    rounds: int = 1  # >1: the budget is split into rounds measured round-robin across all rows

    def validated(self) -> "TimingSettings":
        if self.io not in ("host", "device"):
            raise InputError(f"--io {self.io!r} must be host or device.", "use --io host (end to end) or --io device")
        if self.rounds < 1:
            raise InputError(f"--rounds {self.rounds} must be at least 1.", "e.g. --rounds 3")
        if self.warmup_s < 0 or self.duration_s <= 0 or (self.iterations is not None and self.iterations < 1):
            raise InputError("--warmup must be >= 0, --duration > 0 and --iterations >= 1.", "e.g. --warmup 1 --duration 3")
        return self


def _loop(step: Callable[[], float], settings: TimingSettings) -> list[float]:
    """Call ``step`` (returns one sample in ms) for the warm-up, then for the measured budget."""
    step()  # at least one warm-up call (lazy init, compilation), then the warm-up budget
    end = time.perf_counter() + settings.warmup_s
    while time.perf_counter() < end:
        step()
    samples: list[float] = []
    if settings.iterations is not None:
        for _ in range(settings.iterations):
            samples.append(step())
        return samples
    end = time.perf_counter() + settings.duration_s
    while time.perf_counter() < end or len(samples) < settings.min_iterations:
        samples.append(step())
    return samples


def device_timing_possible(runtime) -> bool:
    """True when ``runtime`` can be timed with its input already on the GPU."""
    return hasattr(runtime, "run_device") and runtime.info().device == "cuda"


def time_runtime(runtime, batch_size: int, settings: TimingSettings, seed: int = 0) -> list[float]:
    """Latency samples (ms) of ``runtime`` on a random batch of ``batch_size``.

    ``io='device'`` applies to runtimes that can (see ``device_timing_possible``); others
    are timed end to end.
    """
    info = runtime.info()
    shape = (batch_size,) + tuple(info.input_shape[1:])
    batch = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
    if settings.io == "device" and device_timing_possible(runtime):
        return _time_device(runtime, batch, settings)

    def step() -> float:
        start = time.perf_counter()
        runtime.run(batch)
        return (time.perf_counter() - start) * 1000.0

    return _loop(step, settings)


def _time_device(runtime, batch: np.ndarray, settings: TimingSettings) -> list[float]:
    import torch

    tensor = torch.from_numpy(batch).cuda()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def step() -> float:
        start.record()
        runtime.run_device(tensor)
        stop.record()
        stop.synchronize()
        return float(start.elapsed_time(stop))

    return _loop(step, settings)


def harness_overhead_ms(samples: int = 2000) -> float:
    """Median cost (ms) of one timed iteration around an empty call: the timing loop's own overhead."""
    def noop(batch):
        return batch

    def step() -> float:
        start = time.perf_counter()
        noop(None)
        return (time.perf_counter() - start) * 1000.0

    return float(np.median(_loop(step, TimingSettings(warmup_s=0.0, iterations=samples))))
