"""Latency statistics (numpy's percentiles, linear interpolation)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

FIELDS = ("mean", "p50", "p90", "p99", "min", "max")


def latency_stats(samples_ms: Sequence[float]) -> dict[str, float]:
    """mean, p50, p90, p99, min and max of latency samples (milliseconds)."""
    values = np.asarray(samples_ms, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no latency samples")
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"mean": float(values.mean()), "p50": float(p50), "p90": float(p90), "p99": float(p99), "min": float(values.min()), "max": float(values.max())}


def throughput(batch: int, samples_ms: Sequence[float]) -> float:
    """Images per second at the mean latency."""
    mean = float(np.mean(samples_ms))
    return batch * 1000.0 / mean if mean > 0 else float("inf")
