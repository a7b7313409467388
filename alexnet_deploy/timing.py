"""Side-by-side timing: several models measured round-robin so machine drift hits all alike."""

from __future__ import annotations

import time
from typing import Callable, Mapping

import numpy as np


def round_robin_medians(runners: Mapping[str, Callable[[], object]], rounds: int = 3, min_seconds: float = 0.0, min_runs: int = 1) -> dict[str, list[float]]:
    """Per-round median seconds of each runner; every round runs each runner in turn.

    A runner runs at least ``min_runs`` times and at least ``min_seconds`` per round.
    Each runner is called once first as warm-up (not timed).
    """
    for run in runners.values():
        run()
    medians: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            times: list[float] = []
            started = time.perf_counter()
            while len(times) < min_runs or time.perf_counter() - started < min_seconds:
                tick = time.perf_counter()
                run()
                times.append(time.perf_counter() - tick)
            medians[name].append(float(np.median(times)))
    return medians
