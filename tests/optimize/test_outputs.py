"""optimize's output files: one file on disk when both goals pick the same variant; pareto.png labels that never overlap."""

from __future__ import annotations

import os

import pytest

from alexnet_deploy.optimize import _write_outputs, place_labels


def _report(out, latency_from, throughput_from):
    row = {"variant": "int8", "runtime": "openvino", "top1": 0.8, "top5": 0.99, "agreement": 0.99, "latency_b1_ms": 2.0,
           "throughput_ips": 800.0, "bytes": 10, "within_budget": True, "file": str(latency_from), "drop_points": 0.0,
           "drop_ci_points": [-0.5, 0.5], "flip_rate": 0.01, "budget_verdict": "within"}
    rows = [row, dict(row, runtime="ort", latency_b1_ms=2.01, throughput_ips=801.0), dict(row, variant="fp32", file=str(throughput_from), latency_b1_ms=2.02, throughput_ips=799.0)]

    def rec(source):
        return {"file": str(out / "x.onnx"), "from": str(source), "variant": "int8", "runtime": "openvino", "latency_b1_ms": 2.0, "throughput_ips": 800.0, "top1": 0.8}

    return {"target": "cpu", "source": "m.pth", "batches": [1, 32], "budget": {"images": 10, "max_drop_points": 1.0, "fp32_top1": 0.8},
            "rows": rows, "recommendation": {"latency": rec(latency_from), "throughput": rec(throughput_from)}, "int8_search": None, "skipped": [], "notes": []}


def test_the_same_variant_for_both_goals_is_one_file_on_disk(tmp_path):
    int8, fp32 = tmp_path / "model.int8.onnx", tmp_path / "model.onnx"
    int8.write_bytes(b"int8 model")
    fp32.write_bytes(b"fp32 model")
    _write_outputs(tmp_path, _report(tmp_path, int8, int8))
    latency, throughput = tmp_path / "best-latency.onnx", tmp_path / "best-throughput.onnx"
    assert latency.read_bytes() == throughput.read_bytes() == b"int8 model"
    assert os.stat(latency).st_ino == os.stat(throughput).st_ino and os.stat(latency).st_ino != os.stat(int8).st_ino
    _write_outputs(tmp_path, _report(tmp_path, int8, fp32))  # a rerun that picks another variant for one goal
    assert latency.read_bytes() == b"int8 model" and throughput.read_bytes() == b"fp32 model"
    assert os.stat(latency).st_ino != os.stat(throughput).st_ino
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_labels_of_points_close_together_do_not_overlap():
    anchors = [(100.0, 100.0)] * 4 + [(103.0, 101.0), (300.0, 50.0)]
    sizes = [(90, 12), (60, 12), (120, 12), (75, 12), (80, 12), (50, 12)]
    boxes = [(x, y, x + w, y + h) for (x, y), (w, h) in zip(place_labels(anchors, sizes), sizes)]
    dots = [(x - 5, y - 5, x + 5, y + 5) for x, y in anchors]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:] + dots:
            assert a[2] <= b[0] or a[0] >= b[2] or a[3] <= b[1] or a[1] >= b[3], (a, b)


def test_rows_carry_the_paired_interval_flips_and_changed_images(tmp_path):
    import numpy as np

    from alexnet_deploy.optimize import _report

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, 400)
    fp32 = np.where(rng.random(400) < 0.8, truth, (truth + 1) % 3)
    int8 = fp32.copy()
    int8[[5, 50, 77]] = (int8[[5, 50, 77]] + 1) % 3  # three images change their top-1
    paths = [f"val/{i:03d}.jpg" for i in range(400)]

    def evaluation(predicted):
        return {"top1": float((predicted == truth).mean()), "top5": 1.0, "n": 400, "predictions": predicted.tolist(), "truths": truth.tolist(),
                "paths": paths, "labels": ["a", "b", "c"]}

    files = {}
    for name in ("fp32", "int8"):
        files[name] = tmp_path / f"{name}.onnx"
        files[name].write_bytes(b"x")
    bench = lambda: [{"runtime": "ort", "batch": 1, "latency_ms": {"p50": 1.0}, "throughput_ips": 10.0}]  # noqa: E731
    report = _report("m.pth", tmp_path, "cpu", ["ort"], [1], 1.0, files, {("fp32", "ort"): evaluation(fp32), ("int8", "ort"): evaluation(int8)},
                     {"fp32": bench(), "int8": bench()}, {"written": True}, {"exported": True}, [], [])
    rows = {r["variant"]: r for r in report["rows"]}
    assert rows["fp32"]["changed_count"] == 0 and rows["fp32"]["drop_ci_points"] == [0.0, 0.0] and rows["fp32"]["budget_verdict"] == "within"
    int8_row = rows["int8"]
    assert int8_row["changed_count"] == 3 and [c["image"] for c in int8_row["changed_images"]] == ["val/005.jpg", "val/050.jpg", "val/077.jpg"]
    lost = int(((fp32 == truth) & (int8 != truth)).sum())
    gained = int(((fp32 != truth) & (int8 == truth)).sum())
    assert int8_row["drop_points"] == pytest.approx(100 * (lost - gained) / 400)
    low, high = int8_row["drop_ci_points"]
    assert low <= int8_row["drop_points"] <= high and high > low
    assert int8_row["flip_rate"] == pytest.approx(3 / 400)
