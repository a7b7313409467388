"""How far to trust a benchmark row: the host's load from other processes, and the spread of its rounds.

On a shared machine a row can be measured while something else holds the cores: the bench then
printed 110-220% of the GEMM ceiling and FP16 1.48x faster than FP32 on onnxruntime CPU, with
no warning. Each measurement is bracketed by two readings of ``/proc/stat`` (every CPU's busy
time) and of this process's own CPU time: what the machine spent beyond this process, over the
cores' capacity in that interval, is the other processes' share. Rows whose rounds disagree, that
ran on a busy host, or that beat the host's own ceiling are flagged, in the table and the JSON.
"""

from __future__ import annotations

import os
import time
from typing import Any, Sequence

import numpy as np

BUSY_SHARE = 0.25  # other processes held more than a quarter of the cores: the row competed for them
SPREAD = 0.20  # the rounds' medians differ by more than a fifth of their median
OVER_CEILING_PCT = 110.0  # faster than the host's own GEMM ceiling allows: the timing (or the ceiling) is off


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) CPU time of the whole machine in clock ticks, or None where /proc/stat is not readable."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal (guest is inside user)
    return busy, busy + idle


class LoadProbe:
    """Started at construction; ``other_share()`` is the share of all cores that other processes
    used since then (0..1), or None where the OS does not tell."""

    def __init__(self):
        self.ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.start = _cpu_jiffies()
        self.own = self._own_seconds()

    @staticmethod
    def _own_seconds() -> float:
        times = os.times()
        return times.user + times.system + times.children_user + times.children_system

    def other_share(self) -> float | None:
        end = _cpu_jiffies()
        if self.start is None or end is None or end[1] <= self.start[1]:
            return None
        busy, total = end[0] - self.start[0], end[1] - self.start[1]
        own = (self._own_seconds() - self.own) * self.ticks
        return float(min(1.0, max(0.0, (busy - own) / total)))


QUIET_SECONDS = 0.5  # the window before a run: 50 clock ticks per core, so a share is read to about 2%


def quiet_reading(seconds: float | None = None) -> dict[str, Any]:
    """The host before a run: the 1-minute load average and other processes' CPU share over ``seconds`` (QUIET_SECONDS)."""
    probe = LoadProbe()
    time.sleep(QUIET_SECONDS if seconds is None else seconds)
    try:
        loadavg = os.getloadavg()[0]
    except OSError:
        loadavg = None
    return {"loadavg_1m": loadavg, "other_cpu_share": probe.other_share(), "cores": os.cpu_count()}


def round_spread(rounds: Sequence[Sequence[float]]) -> float | None:
    """(max - min) / median of the per-round median latencies; one round is split into three parts in time order."""
    rounds = [list(r) for r in rounds if len(r)]
    if len(rounds) == 1:
        samples = rounds[0]
        if len(samples) < 6:
            return None
        rounds = [list(part) for part in np.array_split(np.asarray(samples), 3)]
    if len(rounds) < 2:
        return None
    medians = np.asarray([np.median(r) for r in rounds])
    return float((medians.max() - medians.min()) / np.median(medians))


def flags(row: dict[str, Any]) -> list[str]:
    """Why ``row`` is not to be trusted (empty when nothing is wrong): a busy host, rounds that disagree, a speed over the ceiling."""
    found = []
    share = row.get("other_cpu_share")
    if share is not None and share > BUSY_SHARE:
        found.append(f"busy host: other processes used {100 * share:.0f}% of the CPU")
    spread = row.get("round_spread")
    if spread is not None and spread > SPREAD:
        found.append(f"noisy: rounds differ by {100 * spread:.0f}%")
    if row.get("ceiling_pct") is not None and row["ceiling_pct"] > OVER_CEILING_PCT:
        found.append(f"{row['ceiling_pct']:.0f}% of the host's ceiling: timing or ceiling off")
    return found


def short_flags(row: dict[str, Any]) -> str:
    """'ok', or the row's flags in short ('busy 40%', 'noisy 34%', '>ceiling') for a table; the JSON has them in full."""
    short = []
    share, spread = row.get("other_cpu_share"), row.get("round_spread")
    for flag in row.get("flags", []):
        if flag.startswith("busy host"):
            short.append(f"busy {100 * share:.0f}%")
        elif flag.startswith("noisy"):
            short.append(f"noisy {100 * spread:.0f}%")
        else:
            short.append(">ceiling")
    return ", ".join(short) or "ok"
