"""Accuracy-aware INT8: cross-layer equalization on tiny graphs (fast) and the search on the trained model (slow).

References: a bare onnxruntime session on the original graph, the graph's initializers read
with onnx.numpy_helper, the labels of the held-out images.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from alexnet_deploy.quantize import equalize as eq


def _tiny(lrn: bool = False, outlier: float = 1.0, seed: int = 0):
    """Conv -> Relu [-> LRN] -> MaxPool -> Conv -> Relu -> Flatten -> Gemm -> Relu -> Gemm, 8x8 input.

    ``outlier`` scales conv1's channel 0 up and conv2's input channel 0 down by the same
    factor: the function is unchanged, the ranges are not.
    """
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32)
    b1 = rng.normal(0, 0.1, 4).astype(np.float32)
    w2 = rng.normal(0, 0.3, (6, 4, 3, 3)).astype(np.float32)
    b2 = rng.normal(0, 0.1, 6).astype(np.float32)
    w3 = rng.normal(0, 0.2, (10, 6 * 4 * 4)).astype(np.float32)  # Gemm transB=1: [out, in]
    b3 = rng.normal(0, 0.1, 10).astype(np.float32)
    w4 = rng.normal(0, 0.2, (10, 5)).astype(np.float32)  # Gemm transB=0: [in, out]
    b4 = rng.normal(0, 0.1, 5).astype(np.float32)
    w1[0] *= outlier
    b1[0] *= outlier
    w2[:, 0] /= outlier
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"), (w3, "w3"), (b3, "b3"), (w4, "w4"), (b4, "b4"))]
    nodes = [helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c1"], ["r1"], name="relu1")]
    after = "r1"
    if lrn:
        nodes.append(helper.make_node("LRN", ["r1"], ["n1"], name="lrn1", size=3, alpha=1e-2, beta=0.75, bias=1.0))
        after = "n1"
    nodes += [
        helper.make_node("MaxPool", [after], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Flatten", ["r2"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["g1"], name="fc1", transB=1),
        helper.make_node("Relu", ["g1"], ["r3"], name="relu3"),
        helper.make_node("Gemm", ["r3", "w4", "b4"], ["logits"], name="fc2", transB=0),
    ]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def _run(model, batch):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": batch})[0]


def _weights(model):
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def test_equalization_preserves_the_function_and_balances_outlier_channels():
    batch = np.random.default_rng(1).normal(0, 1, (16, 3, 8, 8)).astype(np.float32)
    original = _tiny(outlier=50.0)
    equalized, pairs = eq.equalize(original)
    onnx.checker.check_model(equalized)
    assert [p["pair"] for p in pairs] == ["conv1->conv2", "conv2->fc1", "fc1->fc2"]  # through MaxPool, Flatten (block 16) and transB=0
    reference = _run(original, batch)
    assert np.abs(_run(equalized, batch) - reference).max() <= 1e-4 * np.abs(reference).max()
    before, after = _weights(original), _weights(equalized)
    ranges = lambda w: np.abs(w).reshape(w.shape[0], -1).max(axis=1)  # noqa: E731
    assert ranges(before["w1"]).max() / ranges(before["w1"]).min() > 20  # the outlier channel
    # After equalization conv1's channel range equals conv2's input-channel range (sqrt(r1*r2) each).
    r1 = ranges(after["w1"])
    r2 = np.abs(np.moveaxis(after["w2"], 1, 0)).reshape(4, -1).max(axis=1)
    np.testing.assert_allclose(r1, r2, rtol=1e-3)


def test_lrn_ends_a_pair():
    equalized, pairs = eq.equalize(_tiny(lrn=True, outlier=50.0))
    assert "conv1->conv2" not in [p["pair"] for p in pairs]
    np.testing.assert_array_equal(_weights(equalized)["w1"], _weights(_tiny(lrn=True, outlier=50.0))["w1"])


def test_bias_correction_removes_the_mean_shift_of_weight_rounding():
    """The corrected FP32 graph with the rounded weights is closer in mean to the original than without correction."""
    batch = np.random.default_rng(2).normal(0.5, 1, (64, 3, 8, 8)).astype(np.float32)
    original = _tiny(seed=3)
    corrected, layers = eq.bias_correct(original, batch)
    assert layers == ["conv1", "conv2", "fc1", "fc2"]

    def rounded(model):  # weights rounded as per-channel symmetric int8, biases as given
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        for t in copy.graph.initializer:
            if t.name == "w1" or t.name == "w2" or t.name == "w3":
                w = numpy_helper.to_array(t)
                s = np.abs(w).reshape(w.shape[0], -1).max(axis=1) / 127
                q = np.round(w / s.reshape((-1,) + (1,) * (w.ndim - 1))) * s.reshape((-1,) + (1,) * (w.ndim - 1))
                t.CopyFrom(numpy_helper.from_array(q.astype(np.float32), t.name))
        return copy

    conv_only = lambda m: _run_output(m, batch, "c1")  # noqa: E731
    reference = conv_only(original).mean(axis=(0, 2, 3))
    plain = np.abs(conv_only(rounded(original)).mean(axis=(0, 2, 3)) - reference).max()
    fixed = np.abs(conv_only(rounded(corrected)).mean(axis=(0, 2, 3)) - reference).max()
    assert fixed < plain


def _run_output(model, batch, name):
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    session = ort.InferenceSession(copy.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run([name], {"input": batch})[0]


# --- slow tier: the trained test model with outlier channels --------------------------------

# 64x was enough on AVX2 hosts (-3.7 points with plain minmax) but on an AVX-512 VNNI/AMX
# Xeon onnxruntime's INT8 kernels lost exactly 1.0 point, the budget itself, so "plain INT8
# misses the budget" did not hold there. At 256x plain minmax loses ~45 points on that host
# (128x: 11; 1024x: 75); equalization still undoes any factor exactly.
OUTLIER_FACTOR = 256.0
OUTLIER_CHANNELS = [0, 5, 9]


def make_outlier_model(source, target):
    """Scale a few of conv2's output channels up and conv3's matching input channels down.

    conv2 -> Relu -> MaxPool -> conv3: both commute with a positive per-channel scale, so
    every logit is unchanged while conv2's activations get a few huge channels.
    """
    model = onnx.load(str(source))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    first, second = convs[1], convs[2]
    inits = {t.name: t for t in model.graph.initializer}
    w1, b1, w2 = (numpy_helper.to_array(inits[name]).copy() for name in (first.input[1], first.input[2], second.input[1]))
    w1[OUTLIER_CHANNELS] *= OUTLIER_FACTOR
    b1[OUTLIER_CHANNELS] *= OUTLIER_FACTOR
    w2[:, OUTLIER_CHANNELS] /= OUTLIER_FACTOR
    for name, array in ((first.input[1], w1), (first.input[2], b1), (second.input[1], w2)):
        inits[name].CopyFrom(numpy_helper.from_array(array, name))
    onnx.save(model, str(target))
    return target


@pytest.fixture(scope="module")
def outlier(trained, tmp_path_factory):
    return make_outlier_model(trained.onnx, tmp_path_factory.mktemp("outlier") / "outlier.onnx")


@pytest.fixture(scope="module")
def val_images(trained):
    """Validation images through torchvision's own ImageFolder and transforms, with labels."""
    import torch
    import torchvision

    import trained_model as tm

    dataset = torchvision.datasets.ImageFolder(str(trained.val), transform=tm.transforms())
    return torch.stack([img for img, _ in dataset]).numpy(), np.asarray(dataset.targets)


def _ort(path, images):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"input": images[i:i + 64]})[0] for i in range(0, len(images), 64)])


@pytest.mark.slow
def test_outlier_model_keeps_every_logit(trained, outlier, val_images):
    reference = _ort(trained.onnx, val_images[0])
    assert np.abs(_ort(outlier, val_images[0]) - reference).max() <= 1e-4 * np.abs(reference).max()


@pytest.mark.slow
def test_plain_int8_misses_the_budget_and_writes_nothing(cli, trained, outlier, tmp_path):
    out = tmp_path / "plain.int8.onnx"
    result = cli.fails(1, "quantize", outlier, "-p", "int8", "--calib", trained.calib, "--holdout", trained.val, "--no-search", "--no-latency", "-o", out, "--json")
    assert not out.exists()
    report = json.loads(result.stdout)
    assert report["written"] is False and report["search"]["met"] is False
    assert [step["technique"] for step in report["search"]["log"]] == ["calibration method"]
    assert report["search"]["log"][0]["drop_points"] > 1.0
    assert "budget" in result.stderr and "nothing was written" in result.stderr


@pytest.mark.slow
def test_search_fixes_outlier_channels_with_equalization(cli, trained, outlier, val_images, tmp_path):
    out = tmp_path / "searched.int8.onnx"
    report = json.loads(cli.ok("quantize", outlier, "-p", "int8", "--calib", trained.calib, "--holdout", trained.val, "--no-latency", "-o", out, "--json").stdout)
    search = report["search"]
    assert search["met"] and out.exists()
    techniques = [step["technique"] for step in search["log"]]
    # Every calibration method was tried and missed; equalization (checked in FP32) fixed it.
    assert techniques[:3] == ["calibration method"] * 3 and not any(s["within_budget"] for s in search["log"][:3])
    check = search["log"][3]
    assert check["technique"] == "cross-layer equalization (FP32 check)" and check["fp32_max_rel_diff"] <= 1e-4
    assert search["recipe"]["graph"].startswith("equalized") and search["recipe"]["float_layers"] == []
    # Independently: the equalized FP32 graph matches the outlier graph, and the written INT8 is within 1 point.
    equalized, _ = eq.equalize(onnx.load(str(outlier)))
    reference = _ort(outlier, val_images[0])
    assert np.abs(_run(equalized, val_images[0]) - reference).max() <= 1e-4 * np.abs(reference).max()
    images, labels = val_images
    fp32_top1 = (reference.argmax(1) == labels).mean()
    int8_logits = _ort(out, images)
    int8_top1 = (int8_logits.argmax(1) == labels).mean()
    assert 100 * (fp32_top1 - int8_top1) <= 1.0
    # Float logits: no two classes of an image share a value (a quantized output tied them).
    assert all(len(np.unique(row)) == len(row) for row in int8_logits)
    from alexnet_deploy.record import read_record

    details = read_record(onnx.load(str(out), load_external_data=False)).details
    recorded = details["quantization"]["search"]
    assert recorded["graph"] == search["recipe"]["graph"] and len(recorded["equalized_layers"]) >= 2
    assert details["quantization"]["measured"]["accuracy"] == pytest.approx(int8_top1, abs=1e-9)


@pytest.mark.slow
def test_allow_drop_writes_the_model_but_still_fails(cli, trained, outlier, tmp_path):
    out = tmp_path / "dropped.int8.onnx"
    result = cli.fails(1, "quantize", outlier, "-p", "int8", "--calib", trained.calib, "--holdout", trained.val, "--no-search", "--allow-drop", "--no-latency", "-o", out)
    assert out.exists() and "written anyway" in result.stderr
    from alexnet_deploy.record import read_record

    details = read_record(onnx.load(str(out), load_external_data=False)).details["quantization"]
    assert details["search"]["searched"] is False and details["measured"]["accuracy"] < details["measured"]["accuracy_fp32"] - 0.01


@pytest.mark.slow
def test_sensitive_layers_fall_back_to_float_when_equalization_cannot_help(cli, trained, outlier, val_images, tmp_path, monkeypatch):
    """As if no pair could be equalized (LRN everywhere): the search ranks layers and keeps the outlier's in float."""
    monkeypatch.setattr(eq, "equalize", lambda proto: (proto, []))
    # Only MinMax: that every calibration method is tried first is the test above; the two
    # histogram calibrations would add a quarter of a minute here and change nothing below.
    from alexnet_deploy.quantize import recipes

    monkeypatch.setattr(recipes, "METHODS", ("minmax",))
    quantized = []  # the float layers of every file quantized, in order
    real_quantize = recipes.quantize_with_ranges

    def counted(prepared, ranges, target, method, work, exclude=()):
        quantized.append(tuple(sorted(exclude)))
        return real_quantize(prepared, ranges, target, method, work, exclude)

    monkeypatch.setattr(recipes, "quantize_with_ranges", counted)
    out = tmp_path / "fallback.int8.onnx"
    report = json.loads(cli.ok("quantize", outlier, "-p", "int8", "--calib", trained.calib, "--holdout", trained.val, "--no-latency", "-o", out, "--json").stdout)
    search = report["search"]
    # Each file is quantized once: the all-INT8 one (step 1) is also the baseline the speed costs are
    # timed against, and the first fallback (one layer in float) is the one its speed cost was timed on.
    layer_count = sum(s["technique"] == "sensitivity" for s in search["log"])
    fallbacks = [s["float_layers"] for s in search["log"] if s["technique"] == "fallback to float"]
    assert len(quantized) == 1 + 2 * layer_count + len(fallbacks) - 1
    assert len(set(quantized)) == len(quantized)
    assert [s["technique"] for s in search["log"][:2]] == ["calibration method", "cross-layer equalization (FP32 check)"]
    assert search["met"] and search["log"][-1]["technique"] == "fallback to float"
    sensitivity = {s["layer"]: s["loss_points"] for s in search["log"] if s["technique"] == "sensitivity"}
    convs = [n.name for n in onnx.load(str(outlier), load_external_data=False).graph.node if n.op_type == "Conv"]
    assert set(convs) <= set(sensitivity) and max(sensitivity, key=sensitivity.get) in convs[1:3]  # the rescaled pair is the most sensitive
    kept = search["recipe"]["float_layers"]
    assert kept and set(kept) <= set(sensitivity)
    # Layers go back to float in the order of accuracy regained per millisecond lost, measured.
    costs = [s for s in search["log"] if s["technique"] == "sensitivity"]
    assert all(s["float_cost_ms"] is not None and s["float_cost_ms"] >= 0 for s in costs)
    by_value = sorted(costs, key=lambda s: (-s["points_per_ms"], -s["loss_points"], -s["mean_rel_err"]))
    assert kept == [s["layer"] for s in by_value[:len(kept)]]
    trail = json.loads(out.with_name(out.name + ".search.json").read_text())  # written as the search went
    assert trail["log"] == search["log"] and trail["best"]["float_layers"] == kept
    written = onnx.load(str(out))
    inits = {t.name: t for t in written.graph.initializer}
    float_nodes = [node for node in written.graph.node if node.name in kept]
    assert {node.name for node in float_nodes} == set(kept)  # every kept layer is in the written graph, by name
    for node in float_nodes:  # kept in float: weights are a float initializer, not a DequantizeLinear output
        assert inits[node.input[1]].data_type == TensorProto.FLOAT
    images, labels = val_images
    fp32_top1 = (_ort(outlier, images).argmax(1) == labels).mean()
    assert 100 * (fp32_top1 - (_ort(out, images).argmax(1) == labels).mean()) <= 1.0
