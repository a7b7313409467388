"""Benchmarks on a busy host: other processes' CPU share measured around every row, rounds that
disagree and speeds over the host's ceiling flagged, in the table and the JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from alexnet_deploy.bench.load import LoadProbe, flags, round_spread, short_flags
from tiny_model import tiny_model


def test_round_spread_and_flags_against_hand_values():
    assert round_spread([[10, 10, 11], [12, 12, 13], [10, 11, 11]]) == pytest.approx((12 - 10) / 11)  # medians 10, 12, 11
    assert round_spread([[1.0] * 4 + [2.0] * 4 + [1.0] * 4]) == pytest.approx(1.0)  # one round: three parts in time order
    assert round_spread([[1.0, 2.0]]) is None
    row = {"other_cpu_share": 0.4, "round_spread": 0.3, "ceiling_pct": 150.0}
    assert flags(row) == ["busy host: other processes used 40% of the CPU", "noisy: rounds differ by 30%", "150% of the host's ceiling: timing or ceiling off"]
    assert short_flags({**row, "flags": flags(row)}) == "busy 40%, noisy 30%, >ceiling"
    quiet = {"other_cpu_share": 0.02, "round_spread": 0.05, "ceiling_pct": 80.0}
    assert flags(quiet) == [] and short_flags({**quiet, "flags": []}) == "ok"


@pytest.fixture
def spinners():
    """One busy loop per core, as a shared CI machine or a neighbour's training job would run."""
    processes = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    yield
    for process in processes:
        process.kill()
        process.wait()


def test_the_probe_sees_other_processes(spinners):
    import time

    probe = LoadProbe()
    time.sleep(0.5)
    assert probe.other_share() > 0.5  # every core was spinning for someone else


def test_a_busy_host_flags_every_row(cli, tmp_path, spinners):
    model = tiny_model(tmp_path / "m.onnx")
    result = cli.ok("bench", model, "--runtime", "ort", "--batch", "1", "--duration", "0.3", "--json", tmp_path / "b.json")
    data = json.loads((tmp_path / "b.json").read_text())
    assert data["machine"]["load_before"]["other_cpu_share"] > 0.5
    row = data["results"][0]
    assert row["other_cpu_share"] > 0.25 and any(flag.startswith("busy host") for flag in row["flags"])
    assert "busy" in result.stdout and "not to be trusted" in result.stderr and "before the run other processes used" in result.stderr
