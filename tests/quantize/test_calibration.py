"""INT8 calibration uses every calibration image, and the report counts them.

A tiny convolutional model (built with onnx.helper, 8x8 inputs) keeps these fast. The
references are independent of the code under test: torchvision's transforms for the
inputs, a bare onnxruntime session exposing intermediate tensors for the min/max, and
onnxruntime's own calibrator in one call over all images for the histogram methods.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

SIZE = 8
MEAN, STD = (0.3, 0.3, 0.3), (0.25, 0.25, 0.25)  # pixel 255 -> 2.8, pixel 0 -> -1.2: the largest magnitude is at 255
CLASSES = ("a", "b")
WATCHED = ("input", "pool1", "gap")  # tensors whose Q/DQ range is their own min/max (no Relu fused into them)


def _tiny_model(path):
    from alexnet_deploy.record import ModelRecord, Preprocessing, write_record

    rng = np.random.default_rng(0)
    weights = {
        "w1": rng.normal(0, 0.5, (4, 3, 3, 3)), "b1": rng.normal(0, 0.1, 4),
        "w2": rng.normal(0, 0.5, (4, 4, 3, 3)), "b2": rng.normal(0, 0.1, 4),
        "w3": rng.normal(0, 0.5, (len(CLASSES), 4)), "b3": np.zeros(len(CLASSES)),
    }
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["conv1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["conv1"], ["relu1"], name="relu1"),
        helper.make_node("MaxPool", ["relu1"], ["pool1"], kernel_shape=[2, 2], strides=[2, 2], name="pool1"),
        helper.make_node("Conv", ["pool1", "w2", "b2"], ["conv2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Relu", ["conv2"], ["relu2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["relu2"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "w3", "b3"], ["output"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", len(CLASSES)])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    write_record(proto, ModelRecord(labels=CLASSES, preprocessing=Preprocessing(resize=SIZE, crop=SIZE, mean=MEAN, std=STD), layout="torchvision"))
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def _write_folder(root, count, seed, extreme_at=()):
    """An ImageFolder of ``count`` noise images in 60..190; images at ``extreme_at`` (folder order) also hold 0 and 255."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(count):
        pixels = rng.integers(60, 191, (SIZE, SIZE, 3), dtype=np.uint8)
        if i in extreme_at:
            pixels[0, 0] = 255
            pixels[-1, -1] = 0
            pixels[3:5, 3:5] = 255  # a bright patch: a large activation inside the network too
        folder = root / CLASSES[i * len(CLASSES) // count]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels, "RGB").save(folder / f"{i:04d}.png")
    return root


def _torchvision_inputs(root):
    """Every image under ``root`` in ImageFolder order, preprocessed by torchvision's own transforms."""
    import torch
    import torchvision
    from torchvision import transforms as T

    dataset = torchvision.datasets.ImageFolder(str(root), transform=T.Compose([T.Resize(SIZE), T.CenterCrop(SIZE), T.ToTensor(), T.Normalize(MEAN, STD)]))
    return torch.stack([image for image, _ in dataset]).numpy()


def _reference_ranges(model, images, names=WATCHED):
    """min/max of ``names`` over ``images``, from a bare onnxruntime session exposing those tensors."""
    proto = onnx.load(str(model))
    del proto.graph.output[:]
    proto.graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in names)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = [session.run(None, {"input": images[i:i + 1]}) for i in range(len(images))]
    return {name: (min(float(o[k].min()) for o in outputs), max(float(o[k].max()) for o in outputs)) for k, name in enumerate(names)}


def _activation_scales(path):
    """tensor name -> (scale, zero point) of the QuantizeLinear reading it, from the quantized file."""
    proto = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    return {n.input[0]: (float(inits[n.input[1]]), int(inits[n.input[2]])) for n in proto.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in WATCHED}


def _u8_scale(low, high):
    """onnxruntime's asymmetric uint8 scale for a calibrated range (the range always includes 0)."""
    return (max(high, 0.0) - min(low, 0.0)) / 255.0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return _tiny_model(root / "tiny.onnx")


def _quantize(cli, model, calib, out, *extra):
    holdout = out.parent / "holdout"
    if not holdout.exists():
        _write_folder(holdout, 6, seed=99)
    return json.loads(cli.ok("quantize", model, "-p", "int8", "--calib", calib, "--holdout", holdout, "-o", out, "--json", "--no-latency", *extra).stdout)


def test_minmax_ranges_come_from_every_calibration_image(cli, tiny, tmp_path):
    """139 images = 18 batches of 8 (> onnxruntime's 16-output limit); the extremes sit in the first batch."""
    calib = _write_folder(tmp_path / "calib", 139, seed=1, extreme_at=(0,))
    out = tmp_path / "tiny.int8.onnx"
    report = _quantize(cli, tiny, calib, out)
    expected = _reference_ranges(tiny, _torchvision_inputs(calib))
    assert expected["input"] == pytest.approx((-1.2, 2.8), abs=1e-5)  # the extreme image is in the set
    scales = _activation_scales(out)
    assert set(scales) == set(WATCHED)
    for name, (low, high) in expected.items():
        assert scales[name][0] == pytest.approx(_u8_scale(low, high), rel=1e-5), f"{name}: scale {scales[name][0]} but the images span [{low}, {high}]"
    assert report["calibration"]["images"] == 139


def test_int8_keeps_the_logits_in_float(cli, tiny, tmp_path):
    """The graph output comes from the float Gemm, not a Q/DQ pair: a per-tensor uint8 output holds
    at most 256 distinct values, which tied near-top classes and zeroed small logits."""
    calib = _write_folder(tmp_path / "calib", 40, seed=5)
    out = tmp_path / "tiny.int8.onnx"
    _quantize(cli, tiny, calib, out)
    proto = onnx.load(str(out))
    producer = {name: node for node in proto.graph.node for name in node.output}
    assert producer["output"].op_type == "Gemm" and any(n.op_type == "QuantizeLinear" for n in proto.graph.node)
    inputs = np.random.default_rng(0).uniform(-1.2, 2.8, (400, 3, SIZE, SIZE)).astype(np.float32)
    logits = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"input": inputs})[0]
    assert len(np.unique(logits)) > 256  # 800 values, not a 256-level grid


def test_default_256_calibration_images_are_used_and_reported(cli, tiny, tmp_path):
    """256 images at batch 8 = 32 batches, a multiple of 16: onnxruntime 1.32 kept none ("No data is collected.")."""
    calib = _write_folder(tmp_path / "calib", 300, seed=2, extreme_at=(3,))
    out = tmp_path / "tiny.int8.onnx"
    report = _quantize(cli, tiny, calib, out)  # no --calib-samples: the default 256
    assert report["calibration"]["images"] == 256
    from alexnet_deploy.record import read_record

    assert read_record(onnx.load(str(out))).details["quantization"]["calibration"]["images"] == 256


@pytest.mark.parametrize("count", [1, 13, 150])
def test_calibration_on_n_images_reports_n(cli, tiny, tmp_path, count):
    """The count is what the calibrator was fed: 13 is no multiple of the batch of 8; 150 spans 19 batches."""
    calib = _write_folder(tmp_path / "calib", count, seed=3, extreme_at=(0,))
    expected = _reference_ranges(tiny, _torchvision_inputs(calib))["input"]
    (calib / "a" / "broken.png").write_bytes(b"\x89PNG cut short")  # skipped, and not counted as calibrated on
    out = tmp_path / "tiny.int8.onnx"
    report = _quantize(cli, tiny, calib, out, "--calib-samples", count + 1)
    assert report["calibration"]["images"] == count and report["calibration"]["skipped"] == 1
    assert _activation_scales(out)["input"][0] == pytest.approx(_u8_scale(*expected), rel=1e-5)


def test_undecodable_calibration_files_are_skipped_and_counted(cli, tiny, tmp_path):
    calib = _write_folder(tmp_path / "calib", 20, seed=5)
    (calib / "a" / "broken.png").write_bytes(b"\x89PNG truncated")
    (calib / "b" / "empty.jpg").write_bytes(b"")
    holdout = _write_folder(tmp_path / "holdout", 60, seed=6)
    out = tmp_path / "tiny.int8.onnx"
    # A random model on noise images: accuracy is not what this test is about (one flip in 50 is 2 points).
    data = json.loads(cli.ok("quantize", tiny, "-p", "int8", "--calib", calib, "--holdout", holdout, "--holdout-samples", 50, "--max-drop", 100,
                             "-o", out, "--json", "--no-latency").stdout)
    assert data["calibration"]["images"] == 20 and data["calibration"]["skipped"] == 2
    assert data["comparison"]["images"] == 50


def test_synthetic_calibration_warns(cli, tiny, tmp_path):
    out = tmp_path / "s.onnx"
    data = json.loads(cli.ok("quantize", tiny, "-p", "int8", "--calib", "synthetic", "--calib-samples", 16, "--min-agreement", 0,
                             "-o", out, "--json", "--no-latency").stdout)
    assert data["calibration"]["source"] == "synthetic" and data["calibration"]["images"] == 16
    assert any("accuracy on real images is unknown" in w for w in data["warnings"])
    assert out.exists()


@pytest.mark.parametrize("method, after", [("entropy", None), ("percentile", None), ("percentile", "entropy")])
def test_histogram_methods_match_one_pass_over_every_image(tiny, tmp_path, method, after, monkeypatch):
    """Chunked histograms equal onnxruntime's calibrator fed every image in one call, with the extreme image last.

    The last image falls in a later chunk than the first, which without the pre-pass
    would fix a narrower bin width (see the calibration notes in recipes.py). ``after``: the
    method the INT8 search tried before on the same images; its range pre-pass is reused
    (one pre-pass calibrator and one histogram calibrator per method, not a pre-pass each).
    """
    import onnxruntime.quantization as quantization
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, create_calibrator

    from alexnet_deploy.datasets import open_image_set
    from alexnet_deploy.record import Preprocessing
    from alexnet_deploy.quantize.pipeline import CalibrationImages
    from alexnet_deploy.quantize.recipes import CALIB_CHUNK, calibrate_ranges
    from alexnet_deploy.progress import as_progress

    count = 2 * CALIB_CHUNK + 7
    calib = _write_folder(tmp_path / "calib", count, seed=4, extreme_at=(count - 1,))
    images = CalibrationImages(Preprocessing(resize=SIZE, crop=SIZE, mean=MEAN, std=STD), open_image_set(calib, "calibration folder"))
    made = []
    monkeypatch.setattr(quantization, "create_calibrator", lambda *args, **kwargs: made.append(kwargs["calibrate_method"]) or create_calibrator(*args, **kwargs))
    extremes: dict = {}
    recorder = _Recorder()
    if after:
        calibrate_ranges(tiny, images, after, None, "input", 1, False, tmp_path, recorder, extremes)
    ranges, used = calibrate_ranges(tiny, images, method, None, "input", 1, False, tmp_path, recorder, extremes)
    assert sorted(used) == list(range(count))
    histograms = [m for m in made if m != CalibrationMethod.MinMax]
    assert made.count(CalibrationMethod.MinMax) == 1 and len(histograms) == (2 if after else 1)
    assert recorder.totals == ([2 * count, count] if after else [2 * count]) and recorder.advanced == sum(recorder.totals)
    monkeypatch.undo()

    arrays = _torchvision_inputs(calib)

    class Everything(CalibrationDataReader):
        def __init__(self):
            self.rows = iter(arrays[i:i + 1] for i in range(len(arrays)))

        def get_next(self):
            row = next(self.rows, None)
            return None if row is None else {"input": row}

    method_enum = {"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}[method]
    reference = create_calibrator(tiny, None, augmented_model_path=str(tmp_path / "ref.onnx"), calibrate_method=method_enum)
    reference.collect_data(Everything())
    expected = reference.compute_data()
    assert set(ranges.keys()) == set(expected.keys())
    for name in expected.keys():
        want = np.asarray(expected[name].range_value, float)
        # Entropy: identical. Percentile histograms |x| from the first chunk's smallest |x|, so
        # smaller values later are not counted: the threshold may move by under one of its 2048 bins.
        tolerance = 1e-6 if method == "entropy" else np.abs(want).max() / 2048
        np.testing.assert_allclose(np.asarray(ranges[name].range_value, float), want, rtol=1e-5, atol=tolerance, err_msg=name)


class _Recorder:
    """A Progress that records what calibration reports."""

    def __init__(self):
        self.totals: list[int] = []
        self.advanced = 0

    def start(self, description, total):
        self.totals.append(total)

    def advance(self, units=1):
        self.advanced += units


@pytest.mark.parametrize("method", ["minmax", "entropy"])
def test_fixed_batch_model_is_fed_padded_batches_and_progress_adds_up(tiny, tmp_path, method):
    """A model whose batch is fixed at 4, 6 images: the last batch of 2 is padded (repeating an image keeps every range).

    Progress: one pass over the images for minmax, two (pre-pass, histograms) for the histogram methods.
    """
    from alexnet_deploy.datasets import open_image_set
    from alexnet_deploy.progress import Progress
    from alexnet_deploy.quantize.pipeline import CalibrationImages
    from alexnet_deploy.quantize.recipes import calibrate_ranges
    from alexnet_deploy.record import Preprocessing

    proto = onnx.load(str(tiny))
    for value in list(proto.graph.input) + list(proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 4
    fixed = tmp_path / "fixed.onnx"
    onnx.save(proto, str(fixed))
    calib = _write_folder(tmp_path / "calib", 6, seed=5, extreme_at=(5,))
    images = CalibrationImages(Preprocessing(resize=SIZE, crop=SIZE, mean=MEAN, std=STD), open_image_set(calib, "calibration folder"))
    recorder = _Recorder()
    progress = type("P", (Progress,), {"start": lambda self, d, t: recorder.start(d, t), "advance": lambda self, u=1: recorder.advance(u)})()
    ranges, used = calibrate_ranges(fixed, images, method, None, "input", 4, True, tmp_path, progress)
    assert sorted(used) == list(range(6))
    passes = 1 if method == "minmax" else 2
    assert recorder.totals == [passes * 6] and recorder.advanced == passes * 6
    if method == "minmax":
        expected = _reference_ranges(tiny, _torchvision_inputs(calib))
        for name, (low, high) in expected.items():
            np.testing.assert_allclose([float(np.asarray(v).reshape(-1)[0]) for v in ranges[name].range_value], [low, high], rtol=1e-5, atol=1e-6, err_msg=name)


def test_the_search_never_keeps_every_layer_in_float(cli, tiny, tmp_path, monkeypatch):
    """A budget only an unquantized model meets is missed (exit 1, nothing written): with every
    Conv/Gemm kept in float the file would be an FP32 model labelled INT8 (no Q/DQ for TensorRT)."""
    from alexnet_deploy.quantize import recipes, search

    layers = {"conv1", "conv2", "fc"}
    excluded = []
    real_quantize = recipes.quantize_with_ranges

    def quantize_with_ranges(path, ranges, target, how, work, exclude=()):
        excluded.append(set(exclude))
        return real_quantize(path, ranges, target, how, work, exclude)

    monkeypatch.setattr(recipes, "quantize_with_ranges", quantize_with_ranges)
    monkeypatch.setattr(search.Budget, "holds", lambda self, measured: layers <= excluded[-1])
    calib = _write_folder(tmp_path / "calib", 16, seed=8)
    out = tmp_path / "tiny.int8.onnx"
    result = cli.fails(1, "quantize", tiny, "-p", "int8", "--calib", calib, "--holdout", calib, "-o", out, "--json", "--no-latency")
    report = json.loads(result.stdout)
    fallbacks = [step["float_layers"] for step in report["search"]["log"] if step["technique"] == "fallback to float"]
    assert fallbacks and max(len(kept) for kept in fallbacks) == len(layers) - 1
    assert not out.exists()


def test_the_search_log_name_is_checked_before_any_work(cli, tiny, tmp_path):
    """INT8 writes OUTPUT.search.json as it goes: a name the disk refuses is said at once, not after calibrating."""
    calib = _write_folder(tmp_path / "calib", 8, seed=6)
    out = tmp_path / ("q" * 240 + ".onnx")  # fine for the model, too long with .search.json after it
    result = cli.fails(2, "quantize", tiny, "-p", "int8", "--calib", calib, "-o", out)
    assert "INT8 search log file name is" in result.stderr and "calibrating" not in result.stderr
    assert not out.exists()
