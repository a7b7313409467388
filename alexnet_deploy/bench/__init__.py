"""Timing, statistics, reports and the benchmark suite (``alexnet bench``)."""
