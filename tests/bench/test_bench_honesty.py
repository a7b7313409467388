"""The bench measures what it says: a fake runtime with a known cost per call and per image.

The fake sleeps ``CALL_S + IMAGE_S * n`` for a batch of n and records every batch it gets,
so the reported latencies have a known lower bound (sleep never returns early) and the
batches it received can be compared with the batch sizes reported. Only lower bounds are
asserted: an upper bound would be a speed assertion on a shared machine.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from alexnet_deploy.bench.harness import TimingSettings, _loop, time_runtime
from alexnet_deploy.runtimes.base import Runtime, RuntimeInfo

CALL_S = 0.004  # fixed cost of one call
IMAGE_S = 0.002  # extra cost per image in the batch
SHAPE = (3, 4, 4)


def known_cost_ms(n: int) -> float:
    return (CALL_S + IMAGE_S * n) * 1000.0


class SleepyRuntime(Runtime):
    """Sleeps a known time per call and per image; records the shape and start time of every call."""

    name = "sleepy"

    def __init__(self):
        super().__init__()
        self.shapes: list[tuple] = []
        self.call_times: list[float] = []
        self.given: list[np.ndarray] = []  # batches as the bench passed them, before any conversion

    def run(self, batch):
        self.given.append(np.array(batch, copy=True))
        return super().run(batch)

    def _info_impl(self):
        return RuntimeInfo("sleepy", "cpu", "fp32", "input", (None,) + SHAPE)

    def _run_impl(self, batch):
        self.call_times.append(time.perf_counter())
        self.shapes.append(tuple(batch.shape))
        time.sleep(CALL_S + IMAGE_S * len(batch))
        return np.zeros((len(batch), 2), np.float32)


@pytest.mark.parametrize("batch", [1, 8, 24])
def test_time_runtime_times_the_whole_call_on_the_whole_batch(batch):
    runtime = SleepyRuntime()
    started = time.perf_counter()
    samples = time_runtime(runtime, batch, TimingSettings(warmup_s=0.0, iterations=4))
    # Consistency, not speed: the samples cannot add up to more than the time that passed.
    assert sum(samples) <= (time.perf_counter() - started) * 1000.0
    assert len(samples) == 4
    # Every call, warm-up included, got all N rows: a bench that ran batch[:1] while
    # reporting batch N would show up here.
    assert runtime.shapes == [(batch,) + SHAPE] * 5
    # Each sample covers at least the sleep inside the call: a timer started after the call
    # (or one that times nothing) reports ~0 ms.
    assert min(samples) >= known_cost_ms(batch), (samples, known_cost_ms(batch))


def test_latency_grows_with_the_batch_at_least_as_the_known_cost_says():
    runtime = SleepyRuntime()
    settings = TimingSettings(warmup_s=0.0, iterations=3)
    time_runtime(runtime, 1, settings)
    large = time_runtime(runtime, 16, settings)
    # The fastest large-batch call still slept 15 more images than any small-batch call
    # could have needed beyond its own sleep; overheads only add to both sides.
    assert min(large) >= known_cost_ms(16)
    assert min(large) - known_cost_ms(1) >= IMAGE_S * 15 * 1000.0 - 1e-9
    assert sorted({s[0] for s in runtime.shapes}) == [1, 16]


def test_run_bench_reports_honest_rows_for_a_known_runtime(monkeypatch, tmp_path):
    """The real ``alexnet bench`` path (run_bench), with the runtime it opens replaced by the fake."""
    from alexnet_deploy.bench import runner

    opened: list[SleepyRuntime] = []

    def fake_open(runtime_name, path, threads, model_options=None, engine_cache=None, progress=None):
        opened.append(SleepyRuntime())
        return opened[-1]

    # Not an .onnx name: the bench would count an ONNX file's FLOPs from its graph.
    model = tmp_path / "m.model"
    model.write_bytes(b"not read: open_runtime is replaced")
    monkeypatch.setattr(runner, "input_kind", lambda path: "onnx")
    monkeypatch.setattr(runner, "open_runtime", fake_open)
    batches = [1, 4, 12]
    report = runner.run_bench([model], ["ort"], batches, TimingSettings(warmup_s=0.0, iterations=3))
    assert [r["batch"] for r in report.results] == batches
    (runtime,) = opened
    # 1 warm-up + 3 timed calls per batch size, each with every row of the reported batch.
    assert runtime.shapes == [(n,) + SHAPE for n in batches for _ in range(4)]
    for row in report.results:
        n = row["batch"]
        assert row["iterations"] == 3
        assert row["latency_ms"]["min"] >= known_cost_ms(n)
        # Throughput is images per second of the reported batch: at most what the sleep allows.
        assert row["throughput_ips"] <= n / (known_cost_ms(n) / 1000.0)
    b12 = report.results[2]
    assert b12["latency_ms"]["min"] - known_cost_ms(1) >= IMAGE_S * 11 * 1000.0 - 1e-9


def test_warmup_calls_are_neither_counted_nor_timed():
    runtime = SleepyRuntime()
    warmup_s = 0.06
    started = time.perf_counter()
    samples = time_runtime(runtime, 2, TimingSettings(warmup_s=warmup_s, iterations=3))
    timed_calls = runtime.call_times[-3:]
    warmup_calls = runtime.call_times[:-3]
    assert len(samples) == 3
    # At least the first forced warm-up call plus one more inside the warm-up budget.
    assert len(warmup_calls) >= 2
    # Timing starts only once the warm-up budget has run out.
    assert timed_calls[0] - started >= warmup_s
    assert all(t >= warmup_s + started for t in timed_calls)


def test_timing_loop_with_warmup_returns_only_the_measured_samples():
    calls: list[float] = []

    def step():
        calls.append(time.perf_counter())
        time.sleep(0.005)
        return float(len(calls))  # the sample says which call produced it

    started = time.perf_counter()
    samples = _loop(step, TimingSettings(warmup_s=0.04, iterations=4))
    warmups = len(calls) - 4
    assert warmups >= 2  # the forced first call, then at least one in the 40 ms budget
    # The samples are exactly the last four calls: none of the warm-up calls was kept.
    assert samples == [float(warmups + i) for i in range(1, 5)]
    assert calls[warmups] - started >= 0.04


def test_duration_mode_counts_at_least_min_iterations_after_warmup():
    calls: list[int] = []

    def step():
        calls.append(1)
        time.sleep(0.002)
        return float(len(calls))

    samples = _loop(step, TimingSettings(warmup_s=0.02, duration_s=1e-9, min_iterations=5))
    assert len(samples) == 5  # the budget ran out at once: exactly min_iterations
    warmups = len(calls) - len(samples)
    assert warmups >= 2 and samples[0] == float(warmups + 1) and samples[-1] == float(len(calls))


def test_duration_mode_measures_for_the_whole_duration():
    calls: list[float] = []

    def step():
        calls.append(time.perf_counter())
        time.sleep(0.002)
        return 1.0

    started = time.perf_counter()
    samples = _loop(step, TimingSettings(warmup_s=0.0, duration_s=0.05, min_iterations=1))
    assert time.perf_counter() - started >= 0.05 and len(samples) >= 2


def test_bench_feeds_float32_and_the_same_batch_every_time():
    """A float64 batch would time a conversion inside run(); a new random batch per run is not reproducible."""
    first, second = SleepyRuntime(), SleepyRuntime()
    time_runtime(first, 3, TimingSettings(warmup_s=0.0, iterations=2))
    time_runtime(second, 3, TimingSettings(warmup_s=0.0, iterations=2))
    assert all(b.dtype == np.float32 for b in first.given + second.given)
    np.testing.assert_array_equal(first.given[0], second.given[0])


def test_host_io_times_run_even_where_device_timing_is_possible():
    class CudaLike(SleepyRuntime):
        def _info_impl(self):
            return RuntimeInfo("sleepy", "cuda", "fp32", "input", (None,) + SHAPE)

        def run_device(self, tensor):
            raise AssertionError("io='host' must time run(), not run_device()")

    runtime = CudaLike()
    samples = time_runtime(runtime, 2, TimingSettings(warmup_s=0.0, iterations=2, io="host"))
    assert len(samples) == 2 and min(samples) >= known_cost_ms(2)


def test_latency_stats_and_throughput_edges():
    from alexnet_deploy.bench.stats import latency_stats, throughput

    assert latency_stats([3.0]) == {k: 3.0 for k in ("mean", "p50", "p90", "p99", "min", "max")}
    with pytest.raises(ValueError, match="no latency samples"):
        latency_stats([])
    assert throughput(4, [0.5]) == pytest.approx(8000.0)  # sub-millisecond latencies
    assert throughput(8, [0.0, 0.0]) == float("inf")


@pytest.mark.parametrize("settings, needle", [
    (TimingSettings(io="gpu"), "--io 'gpu' must be host or device"),
    (TimingSettings(warmup_s=-0.1), "--warmup must be >= 0"),
    (TimingSettings(duration_s=0.0), "--duration > 0"),
    (TimingSettings(iterations=0), "--iterations >= 1"),
])
def test_timing_settings_reject_what_cannot_be_measured(settings, needle):
    from alexnet_deploy.errors import InputError

    with pytest.raises(InputError) as error:
        settings.validated()
    assert needle in error.value.problem and error.value.fix


@pytest.mark.parametrize("settings", [TimingSettings(), TimingSettings(warmup_s=0.0, duration_s=1e-6, iterations=1, io="device"), TimingSettings(iterations=None)])
def test_timing_settings_accept_the_edges(settings):
    assert settings.validated() is settings


def test_round_robin_medians_time_each_runner_with_known_cost():
    from alexnet_deploy.timing import round_robin_medians

    order: list[str] = []

    def runner(name, seconds):
        def run():
            order.append(name)
            time.sleep(seconds)
        return run

    started = time.perf_counter()
    medians = round_robin_medians({"slow": runner("slow", 0.006), "fast": runner("fast", 0.002)}, rounds=3, min_runs=2)
    elapsed = time.perf_counter() - started
    # Consistency, not speed: no median can exceed the wall time of the whole measurement.
    assert max(max(v) for v in medians.values()) <= elapsed
    assert list(medians) == ["slow", "fast"] and all(len(v) == 3 for v in medians.values())
    # Lower bounds from the sleeps (seconds): each median covers its own runner's call.
    assert min(medians["slow"]) >= 0.006 and min(medians["fast"]) >= 0.002
    # One untimed warm-up call each, then per round each runner min_runs times, in turn.
    assert order == ["slow", "fast"] + (["slow"] * 2 + ["fast"] * 2) * 3


def test_round_robin_medians_run_for_min_seconds():
    from alexnet_deploy.timing import round_robin_medians

    calls: list[int] = []
    started = time.perf_counter()
    round_robin_medians({"a": lambda: calls.append(time.sleep(0.002))}, rounds=1, min_seconds=0.03, min_runs=1)
    assert time.perf_counter() - started >= 0.03 and len(calls) >= 1 + 2


def test_harness_overhead_is_the_cost_of_two_clock_reads_in_milliseconds():
    """Bounded by physics on any CPU: above 10 ns (two perf_counter calls and a Python call), below 1 ms.

    The reference: the same two clock reads timed here with perf_counter_ns, over many calls.
    """
    from alexnet_deploy.bench.harness import harness_overhead_ms

    overhead = harness_overhead_ms(samples=500)
    assert 1e-5 < overhead < 1.0, overhead
    pairs = 20000
    start = time.perf_counter_ns()
    for _ in range(pairs):
        time.perf_counter()
        time.perf_counter()
    reference_ms = (time.perf_counter_ns() - start) / pairs / 1e6
    assert overhead < 50 * reference_ms + 0.01  # same order as the clock reads themselves (shared machines are noisy)
