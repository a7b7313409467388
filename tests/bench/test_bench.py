"""Bench statistics, the timing loop, bench JSON and CLI, BENCHMARKS.md sections."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

HAS_CUDA = torch.cuda.is_available()


def test_latency_stats_against_numpy_and_hand_values():
    from alexnet_deploy.bench.stats import latency_stats, throughput

    samples = np.arange(1.0, 101.0)  # 1..100 ms
    stats = latency_stats(samples)
    assert stats == pytest.approx({"mean": 50.5, "p50": 50.5, "p90": 90.1, "p99": 99.01, "min": 1.0, "max": 100.0})
    rng = np.random.default_rng(1)
    skewed = rng.lognormal(1.0, 0.5, 1001)
    stats = latency_stats(skewed)
    assert stats["p99"] == pytest.approx(np.percentile(skewed, 99)) and stats["mean"] == pytest.approx(skewed.mean())
    assert stats["p50"] == pytest.approx(np.sort(skewed)[500])  # odd count: the middle sample
    assert throughput(32, [10.0, 10.0]) == pytest.approx(3200.0)

def test_timing_loop_excludes_warmup_and_counts_iterations():
    from alexnet_deploy.bench.harness import TimingSettings, _loop

    calls = []

    def step():
        calls.append(1)
        return float(len(calls))

    samples = _loop(step, TimingSettings(warmup_s=0.0, iterations=4))
    assert samples == [2.0, 3.0, 4.0, 5.0]  # the first call was the warm-up

@pytest.mark.slow  # seconds of subprocesses or timing waits
def test_bench_json_schema_and_runtimes_agree(cli, half_width, half_width_onnx, tmp_path):
    csv_path, plot = tmp_path / "b.csv", tmp_path / "b.png"
    result = cli.ok("bench", half_width[0], half_width_onnx, "--runtime", "torch,ort", "--batch", "1,2", "--iterations", 3, "--warmup", 0,
                    "--json", "-", "--csv", csv_path, "--plot", plot, "--threads", 1)
    data = json.loads(result.stdout)
    assert set(data["machine"]) >= {"cpu", "cores", "threads", "versions", "date", "gpu"} and data["machine"]["threads"] == 1
    assert "onnxruntime" in data["machine"]["versions"]
    assert [(r["runtime"], r["batch"]) for r in data["results"]] == [("torch", 1), ("torch", 2), ("ort", 1), ("ort", 2)]
    for row in data["results"]:
        assert set(row) >= {"runtime", "model", "precision", "batch", "latency_ms", "throughput_ips", "iterations"}
        assert set(row["latency_ms"]) == {"mean", "p50", "p90", "p99", "min", "max"} and row["iterations"] == 3
        lat = row["latency_ms"]
        assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert row["throughput_ips"] == pytest.approx(row["batch"] * 1000 / lat["mean"])
    assert data["results"][1]["speedup"] == 1.0 and data["results"][1]["baseline"].startswith("torch ")
    ort_b1 = data["results"][2]
    assert ort_b1["speedup"] == pytest.approx(ort_b1["throughput_ips"] / data["results"][0]["throughput_ips"])
    assert len(csv_path.read_text().strip().splitlines()) == 5
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

@pytest.mark.slow  # seconds of subprocesses or timing waits
def test_bench_reports_what_cannot_run(cli, half_width_onnx):
    # Without a GPU, nothing could run for want of one: the environment's failure (exit 4); with one,
    # the torch runtime cannot take an ONNX file: bad usage (exit 2).
    result = cli.fails(2 if HAS_CUDA else 4, "bench", half_width_onnx, "--runtime", "ort-cuda" if not HAS_CUDA else "torch", "--iterations", 1, "--warmup", 0)
    assert "nothing could be measured" in result.stderr and "fix:" in result.stderr
    assert "unknown runtime" in cli.fails(2, "bench", half_width_onnx, "--runtime", "tensorflow").stderr
    assert "not a list of positive integers" in cli.fails(2, "bench", half_width_onnx, "--batch", "0").stderr

def test_write_section_replaces_only_the_section_with_that_exact_title(tmp_path):
    from alexnet_deploy.bench.report import write_section

    target = tmp_path / "BENCHMARKS.md"
    target.write_text("# Benchmarks\n\n## Runtime suite (alexnet bench --suite)\n\nold suite\n\n## Runtime\n\nold runtime\n\n## Notes\n\nmine\n")
    write_section(target, "## Runtime\n\nnew runtime\n")
    text = target.read_text()
    assert "old suite" in text and "mine" in text and "new runtime" in text and "old runtime" not in text
    write_section(target, "## Serving\n\nserved\n")
    assert target.read_text().endswith("## Serving\n\nserved\n") and "new runtime" in target.read_text()
