"""Timing, statistics, host facts, reports and the benchmark suite (``alexnet bench``).

Public API: ``run_bench`` / ``BenchReport``, ``TimingSettings``, ``run_suite``.
``precision``, ``serve_load`` and ``overhead`` are scripts (``python -m alexnet_deploy.bench.X``).
"""

from alexnet_deploy._lazy import lazy_exports

_NAMES = {"run_bench": "runner", "BenchReport": "runner", "TimingSettings": "harness", "run_suite": "suite"}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
