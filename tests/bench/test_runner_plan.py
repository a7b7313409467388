"""``run_bench`` around the timing loop: what it plans, skips, refuses, measures and derives.

The runtimes are fakes with a fixed info, and the timing call is replaced by one that returns
known samples and logs every call, so each derived figure (throughput, speedup, baseline,
GFLOP/s, ceiling share, harness share) is checked against arithmetic done here, and the order
of loads, measurements and closes is checked against the documented plan. The timing loop
itself is tested in test_bench_honesty.py.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
from pathlib import Path

import numpy as np
import pytest

from alexnet_deploy.bench import runner
from alexnet_deploy.bench.harness import TimingSettings
from alexnet_deploy.errors import DependencyError, EnvironmentFailure, InputError, RuntimeFailure
from alexnet_deploy.progress import Progress
from alexnet_deploy.runtimes.base import Runtime, RuntimeInfo

KINDS = {".pth": "checkpoint", ".onnx": "onnx", ".engine": "engine"}
# Per-call milliseconds of each fake runtime: throughput = batch / (ms / 1000).
COST_MS = {"torch": 8.0, "ort": 4.0, "openvino": 2.0, "ort-cuda": 1.0, "trt": 0.5}
CEILINGS = {"fp32": {"gflops": 100.0}, "int8": {"gflops": 400.0}, "bf16": {"gflops": 200.0}}


class FakeRuntime(Runtime):
    """A loaded model that never runs: the timing call is replaced and reads ``cost_ms``."""

    def __init__(self, log, name, path, precision="fp32", device="cpu", min_batch=1, max_batch=None, details=None):
        super().__init__()
        self.log, self.label, self.path = log, name, path
        self.cost_ms = COST_MS[name]
        self._info = RuntimeInfo(name, device, precision, "input", (None, 3, 8, 8), min_batch, max_batch, details or {})
        log.append(("open", name, path.name))

    def _info_impl(self):
        return self._info

    def _run_impl(self, batch):
        raise AssertionError("the timing call is replaced in these tests")

    def _close_impl(self):
        self.log.append(("close", self.label, self.path.name))


class CountingProgress(Progress):
    """Records the declared total and every advance, to compare the two."""

    def __init__(self):
        self.total = None
        self.advanced = 0
        self.messages: list[str] = []

    def __call__(self, message):
        self.messages.append(message)

    def start(self, description, total):
        self.description, self.total = description, total

    def advance(self, units=1):
        self.advanced += units


@pytest.fixture
def bench(monkeypatch):
    """run_bench with fake runtimes, a fixed machine block and logged, known-cost timing calls."""
    log: list[tuple] = []
    opened: dict[tuple[str, str], FakeRuntime] = {}
    behaviour: dict = {"refuse": {}, "fail": {}, "options": {}, "samples": None}

    def fake_open(runtime_name, path, threads, model_options=None, engine_cache=None, progress=None):
        log.append(("args", runtime_name, threads, model_options, progress))
        refusal = behaviour["refuse"].get((runtime_name, path.name))
        if refusal is not None:
            log.append(("refused", runtime_name, path.name))
            raise refusal
        runtime = FakeRuntime(log, runtime_name, path, **behaviour["options"].get(runtime_name, {}))
        opened[(runtime_name, path.name)] = runtime
        return runtime

    def fake_time(runtime, size, settings, seed=0):
        log.append(("time", runtime.label, runtime.path.name, size, settings.warmup_s, settings.iterations, settings.duration_s, settings.min_iterations))
        failure = behaviour["fail"].get((runtime.label, size))
        if failure is not None:
            raise failure
        if behaviour["samples"] is not None:
            return list(behaviour["samples"](runtime, size, len([e for e in log if e[0] == "time" and e[1:4] == (runtime.label, runtime.path.name, size)])))
        count = settings.iterations or settings.min_iterations
        return [runtime.cost_ms] * count

    monkeypatch.setattr(runner, "input_kind", lambda path: KINDS[Path(path).suffix])
    monkeypatch.setattr(runner, "open_runtime", fake_open)
    monkeypatch.setattr(runner, "time_runtime", fake_time)
    monkeypatch.setattr(runner, "machine_info", lambda threads: {"ceilings": CEILINGS, "threads": threads})
    monkeypatch.setattr(runner, "quiet_reading", lambda: {"loadavg_1m": 0.25, "other_cpu_share": 0.0, "cores": 2})
    monkeypatch.setattr(runner, "harness_overhead_ms", lambda: 0.01)
    import alexnet_deploy.bench.host as host

    monkeypatch.setattr(host, "model_flops", lambda path: None)  # the fake files are no graphs

    class QuietHost:  # this machine's real load would flag rows at random
        def other_share(self):
            return 0.0

    monkeypatch.setattr(runner, "LoadProbe", QuietHost)

    class Bench:
        pass

    b = Bench()
    b.log, b.opened, b.behaviour = log, opened, behaviour
    return b


def files(tmp_path, *names):
    out = []
    for name in names:
        path = tmp_path / name
        path.write_bytes(b"x")
        out.append(path)
    return out


def rows(report):
    return [(r["runtime"], Path(r["model"]).name, r["batch"]) for r in report.results]


ONE_ITERATION = TimingSettings(warmup_s=0.0, iterations=2)


def test_threads_model_options_and_progress_reach_every_runtime_it_opens(bench, tmp_path):
    checkpoint, onnx_file = files(tmp_path, "a.pth", "b.onnx")
    options, progress = object(), CountingProgress()
    runner.run_bench([checkpoint, onnx_file], ["torch", "ort"], [1], TimingSettings(warmup_s=0.0, iterations=2, rounds=2), threads=3, model_options=options, progress=progress)
    assert [e for e in bench.log if e[0] == "args"] == [("args", "torch", 3, options, progress), ("args", "ort", 3, options, progress)]
    assert progress.description == "benchmarking 2 runtime/model pair(s) x 1 batch size(s) in 2 rounds"


def test_an_unknown_runtime_is_refused_before_anything_loads(bench, tmp_path):
    (model,) = files(tmp_path, "m.onnx")
    with pytest.raises(InputError) as err:
        runner.run_bench([model], ["ort", "onnxruntime"], [1], ONE_ITERATION)
    assert "unknown runtime onnxruntime" in err.value.problem
    assert err.value.fix == "choose from " + ", ".join(runner.RUNTIMES)
    assert bench.log == []


def test_each_runtime_meets_only_the_inputs_of_its_kind_and_each_input_once(bench, tmp_path, monkeypatch):
    checkpoint, onnx_file = files(tmp_path, "a.pth", "b.onnx")
    monkeypatch.chdir(tmp_path)
    # The same file three times (absolute, relative, absolute again) is benched once.
    report = runner.run_bench([checkpoint, Path("a.pth"), onnx_file, checkpoint], ["torch", "ort"], [1, 4], ONE_ITERATION)
    assert rows(report) == [("torch", "a.pth", 1), ("torch", "a.pth", 4), ("ort", "b.onnx", 1), ("ort", "b.onnx", 4)]
    assert report.skipped == []
    # Runtimes in the order asked for, each closed before the next opens (one round).
    assert [e for e in bench.log if e[0] not in ("time", "args")] == [("open", "torch", "a.pth"), ("close", "torch", "a.pth"), ("open", "ort", "b.onnx"), ("close", "ort", "b.onnx")]
    assert all(Path(r["model"]).is_absolute() for r in report.results)


def test_an_input_no_requested_runtime_takes_is_listed_with_the_runtimes_that_would(bench, tmp_path):
    checkpoint, onnx_file, engine = files(tmp_path, "a.pth", "b.onnx", "c.engine")
    report = runner.run_bench([checkpoint, onnx_file, engine], ["ort", "openvino"], [1], ONE_ITERATION)
    assert rows(report) == [("ort", "b.onnx", 1), ("openvino", "b.onnx", 1)]
    assert report.skipped == [
        {"runtime": "ort,openvino", "model": str(checkpoint.resolve()), "reason": "no requested runtime takes a checkpoint (use torch, torch-compile, torch-cuda, torch-cuda-fp16)"},
        {"runtime": "ort,openvino", "model": str(engine.resolve()), "reason": "no requested runtime takes a engine (use trt)"},
    ]


def test_excluded_pairs_are_left_out_of_the_plan_and_of_the_progress_total(bench, tmp_path):
    a, b = files(tmp_path, "a.onnx", "b.onnx")
    progress = CountingProgress()
    report = runner.run_bench([a, b], ["ort", "openvino"], [1, 2, 8], ONE_ITERATION, progress=progress, exclude=lambda rt, path: rt == "openvino" and path.name == "a.onnx")
    assert sorted({(rt, m) for rt, m, _ in rows(report)}) == [("openvino", "b.onnx"), ("ort", "a.onnx"), ("ort", "b.onnx")]
    assert ("open", "openvino", "a.onnx") not in bench.log
    assert progress.total == 3 * 3 and progress.advanced == progress.total
    assert progress.description == "benchmarking 3 runtime/model pair(s) x 3 batch size(s)"


def test_batches_outside_a_models_limits_are_skipped_with_the_limits(bench, tmp_path):
    (model,) = files(tmp_path, "m.onnx")
    bench.behaviour["options"]["ort"] = {"min_batch": 2, "max_batch": 8}
    progress = CountingProgress()
    report = runner.run_bench([model], ["ort"], [1, 2, 8, 9], ONE_ITERATION, progress=progress)
    assert [r["batch"] for r in report.results] == [2, 8]
    assert [s["reason"] for s in report.skipped] == ["batch 1 is outside the model's limits 2..8", "batch 9 is outside the model's limits 2..8"]
    assert {(s["runtime"], s["model"]) for s in report.skipped} == {("ort", str(model.resolve()))}
    assert [e[3] for e in bench.log if e[0] == "time"] == [2, 8]
    assert progress.advanced == progress.total == 4


def test_rows_carry_throughput_speedup_against_the_first_row_of_their_batch_and_its_name(bench, tmp_path):
    checkpoint, onnx_file = files(tmp_path, "a.pth", "b.onnx")
    report = runner.run_bench([checkpoint, onnx_file], ["torch", "ort", "openvino"], [1, 4], ONE_ITERATION)
    by = {(r["runtime"], r["batch"]): r for r in report.results}
    for (name, size), row in by.items():
        assert row["throughput_ips"] == pytest.approx(size / (COST_MS[name] / 1000.0))
        assert row["iterations"] == 2
        assert row["latency_ms"]["p50"] == pytest.approx(COST_MS[name])
        # torch is the first row of every batch: the baseline, whatever onnxruntime did.
        assert row["baseline"] == "torch a.pth"
        assert row["speedup"] == pytest.approx(COST_MS["torch"] / COST_MS[name])
    assert by[("torch", 1)]["speedup"] == 1.0
    # The per-batch summary compares with onnxruntime FP32, not with the first row.
    assert [(f["batch"], f["runtime"], f["speedup_vs_ort_fp32"]) for f in report.fastest] == [(1, "openvino", pytest.approx(2.0)), (4, "openvino", pytest.approx(2.0))]


def test_the_settings_and_machine_blocks_say_how_it_was_measured(bench, tmp_path):
    (model,) = files(tmp_path, "m.onnx")
    settings = TimingSettings(warmup_s=0.5, duration_s=2.0, iterations=6, io="device", rounds=2)
    report = runner.run_bench([model], ["ort"], [1, 3], settings, threads=3)
    assert report.settings == {"warmup_s": 0.5, "duration_s": 2.0, "iterations": 6, "io": "device", "batches": [1, 3], "rounds": 2}
    assert report.machine == {"ceilings": CEILINGS, "threads": 3, "load_before": {"loadavg_1m": 0.25, "other_cpu_share": 0.0, "cores": 2}}
    # A CPU runtime cannot be timed with its input on a device: the row says host.
    assert {r["io"] for r in report.results} == {"host"}
    d = report.to_dict()
    assert list(d) == ["machine", "settings", "harness", "results", "skipped", "fastest"]
    assert d["results"] is report.results and d["fastest"] is report.fastest


def test_device_io_is_reported_only_for_a_runtime_that_can_take_device_input(bench, tmp_path, monkeypatch):
    (model,) = files(tmp_path, "m.onnx")
    bench.behaviour["options"]["ort-cuda"] = {"device": "cuda"}
    device_io = TimingSettings(warmup_s=0.0, iterations=2, io="device")
    # A CUDA runtime without run_device is timed end to end.
    assert runner.run_bench([model], ["ort-cuda"], [1], device_io).results[0]["io"] == "host"
    monkeypatch.setattr(FakeRuntime, "run_device", lambda self, batch: None, raising=False)
    assert runner.run_bench([model], ["ort-cuda"], [1], device_io).results[0]["io"] == "device"
    assert runner.run_bench([model], ["ort-cuda"], [1], TimingSettings(warmup_s=0.0, iterations=2, io="host")).results[0]["io"] == "host"


def test_a_refused_runtime_is_a_skipped_row_and_the_others_still_run(bench, tmp_path):
    a, b = files(tmp_path, "a.onnx", "b.onnx")
    bench.behaviour["refuse"][("openvino", "a.onnx")] = DependencyError("openvino is not installed.", "pip install 'alexnet-deploy[openvino]'")
    progress = CountingProgress()
    report = runner.run_bench([a, b], ["openvino", "ort"], [1, 2], TimingSettings(warmup_s=0.0, iterations=2, rounds=2), progress=progress)
    assert report.skipped == [{"runtime": "openvino", "model": str(a.resolve()), "reason": "openvino is not installed."}]
    assert rows(report) == [("openvino", "b.onnx", 1), ("openvino", "b.onnx", 2), ("ort", "a.onnx", 1), ("ort", "a.onnx", 2), ("ort", "b.onnx", 1), ("ort", "b.onnx", 2)]
    assert progress.advanced == progress.total == 4 * 2 * 2


@pytest.mark.parametrize("refusals, expected", [
    ([DependencyError("no openvino.", "pip install openvino"), RuntimeFailure("no GPU.", "run on a GPU host")], EnvironmentFailure),
    ([DependencyError("no openvino.", "pip install openvino"), InputError("not an ONNX file.", "give an .onnx")], InputError),
])
def test_nothing_measured_is_an_environment_failure_only_when_every_refusal_was_the_environments(bench, tmp_path, refusals, expected):
    (model,) = files(tmp_path, "m.onnx")
    for name, refusal in zip(("openvino", "ort"), refusals):
        bench.behaviour["refuse"][(name, "m.onnx")] = refusal
    with pytest.raises(expected) as err:
        runner.run_bench([model], ["openvino", "ort"], [1], ONE_ITERATION)
    assert type(err.value) is expected
    assert err.value.problem == "nothing could be measured here (openvino m.onnx: no openvino.; ort m.onnx: no GPU.)." if expected is EnvironmentFailure \
        else err.value.problem == "nothing could be measured (openvino m.onnx: no openvino.; ort m.onnx: not an ONNX file.)."
    assert err.value.fix == ("pip install openvino" if expected is EnvironmentFailure else "pick runtimes that can run here (torch, ort on a CPU) and matching inputs")


def test_nothing_measured_names_the_first_three_reasons_only(bench, tmp_path):
    models = files(tmp_path, "a.onnx", "b.onnx", "c.onnx", "d.onnx")
    for model in models:
        bench.behaviour["refuse"][("ort", model.name)] = RuntimeFailure(f"{model.stem} failed.", "fix it")
    with pytest.raises(EnvironmentFailure) as err:
        runner.run_bench(models, ["ort"], [1], ONE_ITERATION)
    assert err.value.problem == "nothing could be measured here (ort a.onnx: a failed.; ort b.onnx: b failed.; ort c.onnx: c failed.)."


def test_an_environment_refusal_without_a_fix_gets_a_general_one(bench, tmp_path):
    (model,) = files(tmp_path, "m.onnx")
    bench.behaviour["refuse"][("ort", "m.onnx")] = RuntimeFailure("the runtime crashed.")
    with pytest.raises(EnvironmentFailure) as err:
        runner.run_bench([model], ["ort"], [1], ONE_ITERATION)
    assert err.value.fix == "install what the runtimes need"


def test_nothing_measured_because_a_batch_failed_is_an_input_error_even_after_an_environment_refusal(bench, tmp_path):
    (model,) = files(tmp_path, "m.onnx")
    bench.behaviour["refuse"][("openvino", "m.onnx")] = DependencyError("no openvino.", "pip install openvino")
    bench.behaviour["fail"][("ort", 1)] = RuntimeFailure("out of memory.", "smaller batch")
    with pytest.raises(InputError) as err:
        runner.run_bench([model], ["openvino", "ort"], [1], ONE_ITERATION)
    assert type(err.value) is InputError
    assert "openvino m.onnx: no openvino.; ort m.onnx: batch 1: out of memory." in err.value.problem


def test_a_failing_cell_is_a_skipped_row_and_is_not_timed_again_in_later_rounds(bench, tmp_path):
    (model,) = files(tmp_path, "m.onnx")
    bench.behaviour["fail"][("ort", 2)] = RuntimeFailure("out of memory.", "smaller batch")
    bench.behaviour["fail"][("ort", 4)] = ValueError("bad shape\nsecond line of detail")
    bench.behaviour["fail"][("ort", 8)] = KeyError()  # an exception whose text is empty
    progress = CountingProgress()
    report = runner.run_bench([model], ["ort"], [1, 2, 4, 8], TimingSettings(warmup_s=0.0, iterations=4, rounds=3), progress=progress)
    assert [r["batch"] for r in report.results] == [1]
    assert [s["reason"] for s in report.skipped] == ["batch 2: out of memory.", "batch 4: ValueError: bad shape", "batch 8: KeyError: "]
    timed = [e[3] for e in bench.log if e[0] == "time"]
    assert timed == [1, 2, 4, 8, 1, 1]
    assert progress.advanced == progress.total == 4 * 3


def test_a_long_exception_message_is_cut_to_160_characters(bench, tmp_path):
    (model,) = files(tmp_path, "m.onnx")
    bench.behaviour["fail"][("ort", 2)] = RuntimeError("x" * 200)
    report = runner.run_bench([model], ["ort"], [1, 2], ONE_ITERATION)
    assert report.skipped[0]["reason"] == "batch 2: RuntimeError: " + "x" * 160


def test_rounds_load_every_runtime_first_then_time_all_cells_in_turn_splitting_the_budget(bench, tmp_path):
    a, b = files(tmp_path, "a.onnx", "b.onnx")
    progress = CountingProgress()
    settings = TimingSettings(warmup_s=0.3, duration_s=3.0, iterations=7, min_iterations=5, rounds=3)
    report = runner.run_bench([a, b], ["ort"], [1, 2], settings, progress=progress)
    events = [e[:4] if e[0] == "time" else e for e in bench.log if e[0] != "args"]
    cells = [("time", "ort", "a.onnx", 1), ("time", "ort", "a.onnx", 2), ("time", "ort", "b.onnx", 1), ("time", "ort", "b.onnx", 2)]
    assert events == [("open", "ort", "a.onnx"), ("open", "ort", "b.onnx")] + cells * 3 + [("close", "ort", "a.onnx"), ("close", "ort", "b.onnx")]
    times = [e for e in bench.log if e[0] == "time"]
    # Warm-up only in the first round; each round has a third of the duration and ceil(7/3) iterations.
    assert [t[4] for t in times] == [0.3] * 4 + [0.0] * 8
    assert {t[5] for t in times} == {3} and {t[7] for t in times} == {2}
    assert [t[6] for t in times] == [pytest.approx(1.0)] * 12
    # A row's samples are its rounds' union.
    assert {r["iterations"] for r in report.results} == {9}
    assert progress.total == progress.advanced == 2 * 2 * 3
    assert progress.description.endswith(" in 3 rounds")
    assert any(m.endswith("(round 3/3)") for m in progress.messages)


def test_progress_names_each_cell_and_its_round_only_when_there_are_rounds(bench, tmp_path):
    (model,) = files(tmp_path, "m.onnx")
    one, two = CountingProgress(), CountingProgress()
    runner.run_bench([model], ["ort"], [1, 4], ONE_ITERATION, progress=one)
    runner.run_bench([model], ["ort"], [1], TimingSettings(warmup_s=0.0, iterations=2, rounds=2), progress=two)
    assert [m for m in one.messages if m.startswith("ort ")] == ["ort m.onnx batch 1", "ort m.onnx batch 4"]
    assert [m for m in two.messages if m.startswith("ort ")] == ["ort m.onnx batch 1 (round 1/2)", "ort m.onnx batch 1 (round 2/2)"]
    assert one.messages[0] == "loading m.onnx in ort"


def test_fewer_iterations_than_rounds_still_time_one_per_round(bench, tmp_path):
    (model,) = files(tmp_path, "m.onnx")
    report = runner.run_bench([model], ["ort"], [1], TimingSettings(warmup_s=0.0, iterations=2, min_iterations=1, rounds=3))
    assert [e[5] for e in bench.log if e[0] == "time"] == [1, 1, 1]
    assert report.results[0]["iterations"] == 3


def test_rounds_with_a_duration_keep_iterations_unset_and_split_min_iterations(bench, tmp_path):
    (model,) = files(tmp_path, "m.onnx")
    runner.run_bench([model], ["ort"], [1], TimingSettings(warmup_s=0.0, duration_s=2.0, min_iterations=1, rounds=2))
    times = [e for e in bench.log if e[0] == "time"]
    assert [(t[5], t[6], t[7]) for t in times] == [(None, pytest.approx(1.0), 1)] * 2


def test_round_spread_compares_the_rounds_medians(bench, tmp_path):
    (model,) = files(tmp_path, "m.onnx")
    # Round medians 10, 14 and 12 ms: spread (14 - 10) / 12.
    bench.behaviour["samples"] = lambda runtime, size, nth: [{1: 10.0, 2: 14.0, 3: 12.0}[nth]] * 3
    report = runner.run_bench([model], ["ort"], [1], TimingSettings(warmup_s=0.0, iterations=9, rounds=3))
    (row,) = report.results
    assert row["round_spread"] == pytest.approx(4.0 / 12.0)
    assert row["flags"] == ["noisy: rounds differ by 33%"]
    assert row["latency_ms"]["p50"] == pytest.approx(12.0)
    assert row["iterations"] == 9


def test_one_round_closes_each_runtime_before_the_next_opens_even_when_a_cell_fails(bench, tmp_path):
    a, b = files(tmp_path, "a.onnx", "b.onnx")
    bench.behaviour["fail"][("ort", 1)] = RuntimeFailure("x.", "y")
    runner.run_bench([a, b], ["ort", "openvino"], [1], ONE_ITERATION)
    events = [e[:3] for e in bench.log if e[0] != "args"]
    assert events == [
        ("open", "ort", "a.onnx"), ("time", "ort", "a.onnx"), ("close", "ort", "a.onnx"),
        ("open", "ort", "b.onnx"), ("time", "ort", "b.onnx"), ("close", "ort", "b.onnx"),
        ("open", "openvino", "a.onnx"), ("time", "openvino", "a.onnx"), ("close", "openvino", "a.onnx"),
        ("open", "openvino", "b.onnx"), ("time", "openvino", "b.onnx"), ("close", "openvino", "b.onnx"),
    ]


def test_an_interrupted_run_closes_every_loaded_runtime(bench, tmp_path):
    a, b = files(tmp_path, "a.onnx", "b.onnx")
    bench.behaviour["fail"][("openvino", 1)] = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        runner.run_bench([a, b], ["ort", "openvino"], [1], TimingSettings(warmup_s=0.0, iterations=2, rounds=2))
    assert {e[1:] for e in bench.log if e[0] == "close"} == {("ort", "a.onnx"), ("ort", "b.onnx"), ("openvino", "a.onnx"), ("openvino", "b.onnx")}
    assert all(runtime._closed for runtime in bench.opened.values())


def test_other_processes_cpu_share_is_the_time_weighted_mean_over_a_rows_rounds(bench, tmp_path, monkeypatch):
    (model,) = files(tmp_path, "m.onnx")
    shares = iter([0.1, 0.5, None])
    clock = iter([0.0, 0.1, 10.0, 10.3, 20.0, 30.0])  # rounds of 0.1 s and 0.3 s (the third has no reading)

    class Probe:
        def other_share(self):
            return next(shares)

    monkeypatch.setattr(runner, "LoadProbe", Probe)
    monkeypatch.setattr(runner.time, "perf_counter", lambda: next(clock))
    report = runner.run_bench([model], ["ort"], [1], TimingSettings(warmup_s=0.0, iterations=3, rounds=3))
    (row,) = report.results
    assert row["other_cpu_share"] == pytest.approx((0.1 * 0.1 + 0.5 * 0.3) / 0.4)
    assert row["flags"] == ["busy host: other processes used 40% of the CPU"]


def test_no_load_reading_at_all_leaves_the_share_unknown(bench, tmp_path, monkeypatch):
    (model,) = files(tmp_path, "m.onnx")

    class Probe:
        def other_share(self):
            return None

    monkeypatch.setattr(runner, "LoadProbe", Probe)
    report = runner.run_bench([model], ["ort"], [1], ONE_ITERATION)
    assert report.results[0]["other_cpu_share"] is None
    assert report.results[0]["flags"] == []


def test_what_the_runtime_really_ran_in_is_copied_to_the_row(bench, tmp_path):
    (a,) = files(tmp_path, "a.onnx")
    bench.behaviour["options"]["openvino"] = {"precision": "bf16", "details": {"runtime_precision": {"Convolution": "bf16"}, "other": 1}}
    report = runner.run_bench([a], ["openvino", "ort"], [1], ONE_ITERATION)
    by = {r["runtime"]: r for r in report.results}
    assert by["openvino"]["runtime_precision"] == {"Convolution": "bf16"}
    assert "runtime_precision" not in by["ort"] and "other" not in by["openvino"]
    assert by["openvino"]["precision"] == "bf16" and by["openvino"]["device"] == "cpu"


def test_cpu_rows_of_onnx_files_get_their_gflops_and_the_share_of_their_precisions_ceiling(bench, tmp_path, monkeypatch):
    import alexnet_deploy.bench.host as host

    checkpoint, fp32, int8, fp16 = files(tmp_path, "a.pth", "m.onnx", "m.int8.onnx", "m.fp16.onnx")
    flops = {"m.onnx": 2.0e9, "m.int8.onnx": 2.0e9, "m.fp16.onnx": 2.0e9}
    monkeypatch.setattr(host, "model_flops", lambda path: flops[Path(path).name])
    bench.behaviour["options"]["openvino"] = {"precision": "int8"}
    bench.behaviour["options"]["ort-cuda"] = {"device": "cuda"}
    bench.behaviour["options"]["ort"] = {"precision": "fp16"}
    report = runner.run_bench([checkpoint, int8, fp16, fp32], ["torch", "openvino", "ort", "ort-cuda"], [4], ONE_ITERATION)
    by = {(r["runtime"], Path(r["model"]).name): r for r in report.results}
    # A checkpoint's FLOPs are not counted from a graph; a GPU row has no CPU ceiling.
    assert "gflops" not in by[("torch", "a.pth")] and "ceiling_pct" not in by[("torch", "a.pth")]
    assert "gflops" not in by[("ort-cuda", "m.onnx")]
    ov = by[("openvino", "m.int8.onnx")]
    assert ov["gflops"] == pytest.approx(2.0 * 4 / (COST_MS["openvino"] / 1000.0))  # 2 GFLOP x 2000 img/s
    assert ov["ceiling_pct"] == pytest.approx(100.0 * ov["gflops"] / 400.0)
    assert ov["flags"] == ["1000% of the host's ceiling: timing or ceiling off"]
    # FP16 on a CPU is measured against the FP32 ceiling.
    fp16_row = by[("ort", "m.fp16.onnx")]
    assert fp16_row["ceiling_pct"] == pytest.approx(100.0 * fp16_row["gflops"] / 100.0)


def test_a_precision_without_a_ceiling_or_a_graph_without_flops_gets_no_share(bench, tmp_path, monkeypatch):
    import alexnet_deploy.bench.host as host

    counted, uncounted = files(tmp_path, "m.onnx", "n.onnx")
    monkeypatch.setattr(host, "model_flops", lambda path: 1.0e9 if Path(path).name == "m.onnx" else None)
    bench.behaviour["options"]["ort"] = {"precision": "int4"}
    report = runner.run_bench([counted, uncounted], ["ort"], [1], ONE_ITERATION)
    by = {Path(r["model"]).name: r for r in report.results}
    assert by["m.onnx"]["gflops"] == pytest.approx(1.0 * 250.0) and "ceiling_pct" not in by["m.onnx"]
    assert "gflops" not in by["n.onnx"]


def test_the_harness_overhead_is_reported_against_the_fastest_median(bench, tmp_path):
    (model,) = files(tmp_path, "m.onnx")
    report = runner.run_bench([model], ["ort", "openvino"], [1, 2], ONE_ITERATION)
    assert report.harness == {"overhead_ms_per_iteration": 0.01, "overhead_pct_of_fastest_p50": pytest.approx(100 * 0.01 / COST_MS["openvino"])}


def test_measure_cells_with_no_cells_adds_nothing():
    report = runner.BenchReport({})
    runner._measure_cells([], TimingSettings(), report, None, 1)
    assert report.results == [] and report.skipped == []


# open_runtime: which loader each runtime name reaches, with what.


def test_torch_runtimes_resolve_the_checkpoint_and_pick_device_precision_and_compile(monkeypatch, tmp_path):
    pytest.importorskip("torch")
    import torch

    import alexnet_deploy.checkpoints.resolve as resolve
    import alexnet_deploy.runtimes.torch_runtime as torch_runtime
    from alexnet_deploy.checkpoints.options import ModelOptions

    seen = {}

    class Resolved:
        reference = "the module"
        input_size = 96

    def fake_resolve(path, options):
        seen["path"], seen["options"] = path, options
        return Resolved()

    def fake_runtime(module, size, label, device, half, compile):
        return {"module": module, "size": size, "label": label, "device": device, "half": half, "compile": compile}

    monkeypatch.setattr(resolve, "resolve_model", fake_resolve)
    monkeypatch.setattr(torch_runtime, "TorchRuntime", fake_runtime)
    threads = torch.get_num_threads()
    try:
        path = tmp_path / "m.pth"
        options = ModelOptions()
        assert runner.open_runtime("torch", path, None, options) == {"module": "the module", "size": 96, "label": "m.pth", "device": "cpu", "half": False, "compile": False}
        assert seen["options"] is options and seen["path"] == path
        assert runner.open_runtime("torch-compile", path, None)["compile"] is True
        assert isinstance(seen["options"], ModelOptions)
        assert runner.open_runtime("torch-cuda", path, None) | {} == {"module": "the module", "size": 96, "label": "m.pth", "device": "cuda", "half": False, "compile": False}
        assert runner.open_runtime("torch-cuda-fp16", path, None)["half"] is True
        runner.open_runtime("torch", path, 1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("name", ["torch", "torch-cuda-fp16"])
def test_a_torch_runtime_without_torch_names_the_runtime_and_the_extra(monkeypatch, tmp_path, name):
    import builtins
    import sys

    real_import = builtins.__import__

    def no_torch(module, *args, **kwargs):
        if module == "torch" or module.startswith("torch."):
            raise ImportError("No module named 'torch'")
        return real_import(module, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    with pytest.raises(DependencyError) as err:
        runner.open_runtime(name, tmp_path / "m.pth", None)
    assert err.value.problem.startswith(f"The {name} runtime needs the 'torch' package, which is not installed")
    assert err.value.fix == "pip install 'alexnet-deploy[torch]'"


def test_onnx_runtimes_are_opened_by_the_runtime_registry_with_the_threads(monkeypatch, tmp_path):
    import alexnet_deploy.runtimes as runtimes

    calls = []
    monkeypatch.setattr(runtimes, "open_runtime", lambda path, name, threads: calls.append((path, name, threads)) or "opened")
    for name in ("ort", "ort-cuda", "ort-trt", "openvino", "openvino-bf16"):
        assert runner.open_runtime(name, tmp_path / "m.onnx", 3) == "opened"
    assert calls == [(tmp_path / "m.onnx", name, 3) for name in ("ort", "ort-cuda", "ort-trt", "openvino", "openvino-bf16")]


@pytest.fixture
def trt_fakes(monkeypatch):
    import alexnet_deploy.build.engine as engine_module
    import alexnet_deploy.runtimes.tensorrt as tensorrt_module

    calls = {"built": [], "opened": []}
    fits = {"value": False}

    def fake_build(onnx_path, engine_path, progress=None):
        calls["built"].append((onnx_path, engine_path, progress))

    monkeypatch.setattr(engine_module, "build_engine", fake_build)
    monkeypatch.setattr(tensorrt_module, "TrtRuntime", lambda path: calls["opened"].append(path) or "engine runtime")
    calls["checked"] = []
    monkeypatch.setattr(runner, "_cached_engine_fits", lambda engine, onnx_path: calls["checked"].append((engine, onnx_path)) or fits["value"])
    calls["fits"] = fits
    return calls


def test_trt_builds_an_engine_beside_the_onnx_file_or_in_the_cache_and_runs_it(trt_fakes, tmp_path):
    onnx_file = tmp_path / "m.fp16.onnx"
    onnx_file.write_bytes(b"x")
    marker = object()
    assert runner.open_runtime("trt", onnx_file, None, progress=marker) == "engine runtime"
    assert trt_fakes["built"] == [(onnx_file, tmp_path / "m.fp16.engine", marker)]
    assert trt_fakes["opened"] == [tmp_path / "m.fp16.engine"]
    cache = tmp_path / "cache"
    runner.open_runtime("trt", onnx_file, None, engine_cache=cache)
    assert trt_fakes["built"][-1][:2] == (onnx_file, cache / "m.fp16.engine")
    assert trt_fakes["opened"][-1] == cache / "m.fp16.engine"


def test_trt_reuses_a_cached_engine_that_fits_and_opens_an_engine_file_as_it_is(trt_fakes, tmp_path):
    onnx_file, engine = tmp_path / "m.onnx", tmp_path / "given.engine"
    onnx_file.write_bytes(b"x")
    engine.write_bytes(b"x")
    trt_fakes["fits"]["value"] = True
    runner.open_runtime("trt", onnx_file, None)
    assert trt_fakes["built"] == [] and trt_fakes["opened"] == [tmp_path / "m.engine"]
    assert trt_fakes["checked"] == [(tmp_path / "m.engine", onnx_file)]
    trt_fakes["fits"]["value"] = False
    runner.open_runtime("trt", engine, None)
    assert trt_fakes["built"] == [] and trt_fakes["opened"][-1] == engine


def test_a_cached_engine_that_is_missing_or_unreadable_does_not_fit(tmp_path):
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"model")
    assert runner._cached_engine_fits(tmp_path / "m.engine", onnx_file) is False
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not an engine")
    # Without TensorRT (this host) or with a sidecar that cannot be read, rebuild.
    assert runner._cached_engine_fits(engine, onnx_file) is False


def test_a_file_of_no_known_kind_is_refused_naming_what_bench_takes(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model")
    with pytest.raises(InputError) as err:
        runner.input_kind(notes)
    assert err.value.problem == f"{notes} is not a checkpoint, an ONNX model or a TensorRT engine."
    assert err.value.fix == "give .pth/.pt, .onnx or .engine files"
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(InputError) as err:
        runner.input_kind(empty)
    assert err.value.problem == f"bench input {empty} is empty (0 bytes)."
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    assert runner.input_kind(engine) == "engine"


def test_a_cached_engine_fits_only_when_its_sidecar_names_this_onnx_file_and_this_tensorrt(tmp_path, monkeypatch):
    import hashlib
    import sys
    from types import SimpleNamespace

    import alexnet_deploy.runtimes.tensorrt as tensorrt_module
    from alexnet_deploy.errors import InputError as SidecarError

    onnx_file, engine = tmp_path / "m.onnx", tmp_path / "m.engine"
    onnx_file.write_bytes(b"model")
    digest = hashlib.sha256(b"model").hexdigest()
    monkeypatch.setitem(sys.modules, "tensorrt", SimpleNamespace(__version__="10.9"))  # as if TensorRT were installed
    sidecar = {"value": SimpleNamespace(source_onnx_sha256=digest, tensorrt_version="10.9")}
    read = []

    def read_sidecar(path):
        read.append(path)
        if isinstance(sidecar["value"], Exception):
            raise sidecar["value"]
        return sidecar["value"]

    monkeypatch.setattr(tensorrt_module, "read_sidecar", read_sidecar)
    assert runner._cached_engine_fits(engine, onnx_file) is False and read == []  # no engine yet: nothing read
    engine.write_bytes(b"engine")
    assert runner._cached_engine_fits(engine, onnx_file) is True and read == [engine]
    sidecar["value"] = SimpleNamespace(source_onnx_sha256="0" * 64, tensorrt_version="10.9")  # built from another file
    assert runner._cached_engine_fits(engine, onnx_file) is False
    sidecar["value"] = SimpleNamespace(source_onnx_sha256=digest, tensorrt_version="10.8")  # built by another TensorRT
    assert runner._cached_engine_fits(engine, onnx_file) is False
    sidecar["value"] = SidecarError("unreadable sidecar.", "rebuild")
    assert runner._cached_engine_fits(engine, onnx_file) is False


# machine_info: what every report says about the host.


def test_machine_info_reports_the_host_versions_threads_and_a_utc_date(monkeypatch):
    import alexnet_deploy.bench.host as host

    seen = []
    monkeypatch.setattr(host, "host_info", lambda threads, measure: seen.append((threads, measure)) or {"isa_line": "fake isa", "ceilings": {}})
    monkeypatch.setattr(host, "cpu_name", lambda: "Fake CPU 9000")
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    info = runner.machine_info(2, measure_ceilings=False)
    after = datetime.datetime.now(datetime.timezone.utc)
    assert seen == [(2, False)]
    assert info["cpu"] == "Fake CPU 9000" and info["isa_line"] == "fake isa" and info["ceilings"] == {}
    assert info["cores"] == os.cpu_count() and info["threads"] == 2
    assert info["versions"]["numpy"] == np.__version__
    expected = {}
    for package in ("numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "openvino", "torch", "tensorrt"):
        try:
            expected[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    assert info["versions"] == expected and {"numpy", "onnx", "onnxruntime"} <= set(expected)
    stamp = datetime.datetime.fromisoformat(info["date"])
    assert stamp.utcoffset() == datetime.timedelta(0) and before <= stamp <= after
    assert info["python"] == ".".join(map(str, os.sys.version_info[:3]))
    assert info["platform"] and isinstance(info["platform"], str)
    import torch

    assert info["gpu"] == (torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    runner.machine_info(None)
    assert seen[-1] == (None, True)
