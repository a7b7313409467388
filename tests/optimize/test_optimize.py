"""``alexnet optimize`` end to end on the trained test model.

References: ``alexnet eval`` run separately on each variant (the accuracy numbers must be
equal exactly), ``alexnet bench`` run separately (speed only to the same order of magnitude:
the machine is shared), the files themselves.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

import trained_model as tm

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def optimized(cli, trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("optimize") / "out"
    args = ["optimize", trained.checkpoint, "--data", trained.val, "--calib", trained.calib, "-o", out, "--batch", "1,8", "--duration", "0.3",
            "--arch", "torchvision", "--input-size", tm.CROP, "--resize", tm.RESIZE, "--crop", tm.CROP,
            "--mean", ",".join(map(str, tm.MEAN)), "--std", ",".join(map(str, tm.STD))]
    report = json.loads(cli.ok(*args, "--json").stdout)
    return out, args, report


def test_every_file_is_written(optimized):
    out, _, report = optimized
    for name in ("model.onnx", "model.fp16.onnx", "model.int8.onnx", "report.md", "report.json", "pareto.png", "best-latency.onnx", "best-throughput.onnx"):
        assert (out / name).is_file(), name
    assert Image.open(out / "pareto.png").size[0] > 400
    assert json.loads((out / "report.json").read_text())["rows"] == report["rows"]
    assert "| variant | runtime |" in (out / "report.md").read_text()
    from alexnet_deploy.optimize import available_bf16, default_runtimes

    bf16, why = available_bf16()
    assert {r["variant"] for r in report["rows"]} == {"fp32", "fp16", "int8"} | ({"bf16"} if bf16 else set())
    if not bf16:  # skipped with its reason (no openvino, or a CPU without native BF16)
        assert any(s["variant"] == "bf16" and s["reason"] == why for s in report["skipped"])
    # every variant measured on every runtime of the CPU target (onnxruntime, and OpenVINO where installed)
    runtimes, _ = default_runtimes("cpu")
    for variant in ("fp32", "fp16", "int8"):
        assert {r["runtime"] for r in report["rows"] if r["variant"] == variant} == set(runtimes)


def test_accuracy_equals_alexnet_eval_and_speed_is_plausible(cli, optimized, trained):
    out, _, report = optimized
    for row in report["rows"]:
        # accuracy is measured on the row's own runtime (OpenVINO's INT8/BF16 kernels round their own way)
        evaluation = json.loads(cli.ok("eval", row["file"], "--data", trained.val, "--runtime", row["runtime"], "--json").stdout)
        assert (row["top1"], row["top5"], row["images"]) == (evaluation["top1"], evaluation["top5"], evaluation["n"])
    fp32 = next(r for r in report["rows"] if r["variant"] == "fp32")
    bench = json.loads(cli.ok("bench", out / "model.onnx", "--runtime", "ort", "--batch", "8", "--duration", "0.3", "--json").stdout)
    ratio = bench["results"][0]["throughput_ips"] / fp32["throughput_ips"]
    assert 0.1 < ratio < 10  # same order of magnitude: timings on a shared machine are noise-prone


def test_recommendation_is_within_budget_and_copied(optimized):
    out, _, report = optimized
    budget = report["budget"]
    for goal in ("latency", "throughput"):
        rec = report["recommendation"][goal]
        row = next(r for r in report["rows"] if r["file"] == rec["from"] and r["runtime"] == rec["runtime"])
        assert 100 * (budget["fp32_top1"] - row["top1"]) <= budget["max_drop_points"]
        assert (out / f"best-{goal}.onnx").read_bytes() == Path(rec["from"]).read_bytes()
    within = [r for r in report["rows"] if r["within_budget"]]
    assert report["recommendation"]["latency"]["latency_b1_ms"] == min(r["latency_b1_ms"] for r in within)


def test_rerun_resumes_and_a_changed_budget_redoes_only_int8(cli, optimized):
    _, args, first = optimized
    again = json.loads(cli.ok(*args, "--json").stdout)
    assert again["stages"]["ran"] == [] and set(again["stages"]["resumed"]) == set(first["stages"]["ran"])
    assert again["rows"] == first["rows"]
    changed = json.loads(cli.ok(*args, "--max-drop", "2", "--json").stdout)
    assert "int8" in changed["stages"]["ran"] and "export" in changed["stages"]["resumed"] and "eval-fp32" in changed["stages"]["resumed"]
