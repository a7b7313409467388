"""optimize's output files: one file on disk when both goals pick the same variant; pareto.png labels that never overlap."""

from __future__ import annotations

import os

from alexnet_deploy.optimize import _write_outputs, place_labels


def _report(out, latency_from, throughput_from):
    row = {"variant": "int8", "runtime": "openvino", "top1": 0.8, "top5": 0.99, "agreement": 0.99, "latency_b1_ms": 2.0,
           "throughput_ips": 800.0, "bytes": 10, "within_budget": True, "file": str(latency_from)}
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
