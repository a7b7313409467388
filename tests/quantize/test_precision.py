"""FP16/INT8 quantization, eval and verify on a model trained in this session.

References are independent of the code under test: torchvision's ImageFolder and
transforms for the images, torchvision's AlexNet for FP32 predictions, a bare
onnxruntime session for the quantized models, and the ONNX graph read directly.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

import trained_model as tm

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def val_set(trained):
    """Validation images through torchvision's own ImageFolder and transforms."""
    import torchvision

    dataset = torchvision.datasets.ImageFolder(str(trained.val), transform=tm.transforms())
    images = torch.stack([img for img, _ in dataset]).numpy()
    return images, np.asarray(dataset.targets)


@pytest.fixture(scope="session")
def fp32_logits(trained, val_set):
    """torchvision's AlexNet with the trained weights, on the validation images."""
    import torchvision

    model = torchvision.models.alexnet(num_classes=len(tm.CLASSES))
    model.load_state_dict(torch.load(trained.checkpoint, weights_only=True)["model_state_dict"])
    with torch.no_grad():
        return model.eval()(torch.from_numpy(val_set[0])).numpy()


def ort_logits(path, images):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"input": images[i:i + 64]})[0] for i in range(0, len(images), 64)])


@pytest.fixture(scope="session")
def quantized(trained, cli, store):
    """precision tag -> (path, the --json summary), made once through the CLI."""
    made = {}

    def get(tag):
        if tag not in made:
            precision, target = {"fp16": ("fp16", "cpu"), "int8": ("int8", "cpu"), "int8-trt": ("int8", "tensorrt"), "int8-dynamic": ("int8-dynamic", "cpu")}[tag]
            out = store / f"trained.{tag}.onnx"
            args = ["quantize", trained.onnx, "-p", precision, "--target", target, "-o", out, "--holdout", trained.val, "--json", "--no-latency"]
            if precision == "int8":
                args += ["--calib", trained.calib]
            made[tag] = (out, json.loads(cli.ok(*args).stdout))
        return made[tag]

    return get


def test_the_test_model_is_really_trained(trained, val_set, fp32_logits):
    accuracy = (fp32_logits.argmax(1) == val_set[1]).mean()
    assert accuracy >= 0.85, f"trained model only reaches {accuracy:.1%} (train {trained.train_accuracy:.1%} in {trained.train_seconds:.0f}s)"
    assert accuracy < 1.0 or trained.train_accuracy < 1.0  # a task with some hard images, so flips would show


def test_fp16_agrees_with_fp32(quantized, val_set, fp32_logits, trained):
    path, summary = quantized("fp16")
    logits = ort_logits(path, val_set[0])
    agreement = (logits.argmax(1) == fp32_logits.argmax(1)).mean()
    assert agreement >= 0.995
    assert np.isfinite(logits).all()
    assert abs(summary["comparison"]["top1_agreement"] - agreement) <= 1 / len(logits)
    proto = onnx.load(str(path))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # apps keep float32 I/O
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in proto.graph.initializer)
    assert path.stat().st_size <= 0.55 * trained.onnx.stat().st_size


@pytest.mark.parametrize("tag", ["int8", "int8-trt", "int8-dynamic"])
def test_int8_accuracy_within_one_point(quantized, val_set, fp32_logits, trained, tag):
    path, summary = quantized(tag)
    truth = val_set[1]
    fp32_acc = (fp32_logits.argmax(1) == truth).mean()
    int8_acc = (ort_logits(path, val_set[0]).argmax(1) == truth).mean()
    # The tool's own report says the same thing (preprocessing differences would show here).
    assert summary["comparison"]["accuracy"] == pytest.approx(int8_acc, abs=1.5 / len(truth))
    # FP32 accuracy of the FP32 file, from a bare session: exact, so INT8 logits passed off as FP32 would show.
    assert summary["comparison"]["images"] == len(truth)
    assert summary["comparison"]["accuracy_fp32"] == (ort_logits(trained.onnx, val_set[0]).argmax(1) == truth).mean()
    assert abs(int8_acc - fp32_acc) <= 0.01, f"{tag}: {int8_acc:.3f} vs FP32 {fp32_acc:.3f}"
    limit = 0.30 if tag != "int8-dynamic" else 0.35
    assert path.stat().st_size <= limit * trained.onnx.stat().st_size


def _initializers(proto):
    return {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}


def test_tensorrt_target_follows_tensorrt_rules(quantized):
    path, _ = quantized("int8-trt")
    proto = onnx.load(str(path))
    inits = _initializers(proto)
    producers = {out: node for node in proto.graph.node for out in node.output}
    qdq = [n for n in proto.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    for node in qdq:
        zero_point = inits[node.input[2]]
        assert zero_point.dtype == np.int8 and not zero_point.any(), f"{node.name}: zero point {zero_point}"
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            assert inits[node.input[0]].dtype == np.int8, f"{node.name} dequantizes {inits[node.input[0]].dtype}"
    weighted = [n for n in proto.graph.node if n.op_type in ("Conv", "Gemm")]
    assert len(weighted) == 8
    for node in weighted:
        weight_dq = producers[node.input[1]]
        assert weight_dq.op_type == "DequantizeLinear"
        weight = inits[weight_dq.input[0]]
        scales = inits[weight_dq.input[1]]
        assert scales.shape == (weight.shape[0],) and (scales > 0).all(), f"{node.name}: per-channel scales over output channels"
        assert producers[node.input[0]].op_type == "DequantizeLinear"  # activations quantized at the input
        if len(node.input) > 2:
            assert node.input[2] in inits and inits[node.input[2]].dtype == np.float32, "bias stays float (no INT32 DequantizeLinear)"
    from alexnet_deploy.build.lint import lint_onnx

    assert lint_onnx(proto) == []  # and the toolkit's own TensorRT lint agrees
    cpu_rules = {f.rule for f in lint_onnx(onnx.load(str(quantized("int8")[0])))}
    assert {"qdq-int32", "qdq-uint8"} <= cpu_rules  # the cpu recipe is onnxruntime-only
    # Q/DQ only feed Conv/Gemm: nothing else consumes a DequantizeLinear.
    consumers = [n for n in proto.graph.node for i in n.input if i in {d.output[0] for d in qdq if d.op_type == "DequantizeLinear"}]
    assert {n.op_type for n in consumers} <= {"Conv", "Gemm"}


def test_cpu_int8_uses_per_channel_signed_weights(quantized):
    proto = onnx.load(str(quantized("int8")[0]))
    inits = _initializers(proto)
    producers = {out: node for node in proto.graph.node for out in node.output}
    for node in (n for n in proto.graph.node if n.op_type == "Conv"):
        dq = producers[node.input[1]]
        assert inits[dq.input[0]].dtype == np.int8
        assert inits[dq.input[1]].shape == (inits[dq.input[0]].shape[0],)


def test_dynamic_int8_quantizes_only_gemm(quantized):
    proto = onnx.load(str(quantized("int8-dynamic")[0]))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("MatMulInteger") == 3 and "ConvInteger" not in ops and ops.count("Conv") == 5
    assert "Gemm" not in ops


def test_metadata_records_precision_and_calibration(quantized, trained):
    from alexnet_deploy.record import read_record

    path, summary = quantized("int8-trt")
    record = read_record(onnx.load(str(path), load_external_data=False))
    fp32 = read_record(onnx.load(str(trained.onnx), load_external_data=False))
    assert record.precision == "int8" and record.labels == fp32.labels == tm.CLASSES
    assert record.preprocessing == fp32.preprocessing
    q = record.details["quantization"]
    assert q["target"] == "tensorrt" and "symmetric" in q["recipe"]
    files = sorted(str(p.relative_to(trained.calib)) for p in trained.calib.rglob("*.png"))
    assert q["calibration"]["images"] == len(files) == 150 and q["calibration"]["method"] == "minmax"
    assert q["calibration"]["files_sha256"] == hashlib.sha256("\n".join(files).encode()).hexdigest()
    assert q["source_onnx_sha256"] == hashlib.sha256(trained.onnx.read_bytes()).hexdigest()
    assert summary["calibration"] == q["calibration"]
    assert read_record(onnx.load(str(quantized("fp16")[0]), load_external_data=False)).precision == "fp16"


def test_eval_matches_torchvision(cli, trained, val_set, fp32_logits, tmp_path):
    report = tmp_path / "eval.json"
    png = tmp_path / "confusion.png"
    result = cli.ok("eval", trained.onnx, "--data", trained.val, "--json", report, "--confusion", png)
    data = json.loads(report.read_text())
    truth, predicted = val_set[1], fp32_logits.argmax(1)
    expected = np.zeros((5, 5), int)
    np.add.at(expected, (truth, predicted), 1)
    assert data["n"] == len(truth)
    # Same images, same preprocessing, same weights: at most a near-tie may flip between runtimes.
    assert np.abs(np.asarray(data["confusion"]) - expected).sum() <= 2
    assert data["top1"] == pytest.approx((predicted == truth).mean(), abs=1.5 / len(truth))
    top5 = np.argsort(-fp32_logits, 1)[:, :5]
    assert data["top5"] == pytest.approx((top5 == truth[:, None]).any(1).mean(), abs=1.5 / len(truth))
    for index, name in enumerate(tm.CLASSES):
        assert data["per_class"][name]["n"] == (truth == index).sum()
        assert data["per_class"][name]["top1"] == pytest.approx((predicted[truth == index] == index).mean(), abs=2.5 / 80)
    from PIL import Image

    with Image.open(png) as image:
        assert image.format == "PNG" and image.width > 100 and image.height > 100
    assert "confusion" in result.stdout and "checker" in result.stdout


def test_eval_checkpoint_with_torch_runtime(cli, trained, fp32_logits, val_set):
    args = ["eval", trained.checkpoint, "--data", trained.val, "--arch", "torchvision", "--input-size", tm.CROP, "--resize", tm.RESIZE,
            "--crop", tm.CROP, "--mean", ",".join(map(str, tm.MEAN)), "--std", ",".join(map(str, tm.STD)), "--json", "-"]
    data = json.loads(cli.ok(*args).stdout)
    assert data["runtime"] == "torch" and data["n"] == len(val_set[1])
    expected = np.zeros((5, 5), int)
    np.add.at(expected, (val_set[1], fp32_logits.argmax(1)), 1)
    np.testing.assert_array_equal(np.asarray(data["confusion"]), expected)  # same weights, same framework: exact
    limited = json.loads(cli.ok(*args, "--limit", 100).stdout)
    assert limited["n"] == 100 and len(limited["per_class"]) == 5


def test_eval_preprocessing_equals_torchvision(trained):
    from PIL import Image

    from alexnet_deploy.record import read_record
    from alexnet_deploy.preprocess import preprocess_image

    spec = read_record(onnx.load(str(trained.onnx), load_external_data=False)).preprocessing
    reference = tm.transforms()
    for path in sorted(trained.val.rglob("*.png"))[::40]:
        with Image.open(path) as image:
            expected = reference(image.convert("RGB")).numpy()
        assert np.abs(preprocess_image(path, spec) - expected).max() <= 1e-6


@pytest.mark.parametrize("tag", ["fp16", "int8", "int8-trt", "int8-dynamic"])
def test_verify_quantized_against_checkpoint_and_reference(cli, trained, quantized, tag, tmp_path):
    path, _ = quantized(tag)
    report = tmp_path / "v.json"
    cli.ok("verify", path, "--reference", trained.onnx, "--images", trained.calib, "--json", report)
    data = json.loads(report.read_text())
    assert data["passed"] and data["precision"] == ("fp16" if tag == "fp16" else tag.replace("-trt", ""))
    assert data["images"] == 150 and data["samples"] == 150
    assert "min_top1_agreement" in data["thresholds"]
    if tag == "int8":
        cli.ok("verify", path, "--checkpoint", trained.checkpoint, "--images", trained.calib)


def test_verify_images_use_the_models_preprocessing(cli, trained, quantized, tmp_path):
    """verify --images figures equal a bare onnxruntime comparison on torchvision-preprocessed images."""
    from PIL import Image

    from alexnet_deploy.verify.metrics import compare_logits

    path, _ = quantized("int8")
    data = json.loads(cli.ok("verify", path, "--reference", trained.onnx, "--images", trained.calib, "--batch-sizes", "30", "--json", "-").stdout)
    files = sorted(trained.calib.rglob("*.png"))
    transform = tm.transforms()  # the record's resize/crop/mean/std, through torchvision

    def load(file):
        with Image.open(file) as image:
            return transform(image.convert("RGB")).numpy()

    images = np.stack([load(f) for f in files])
    candidate = ort_logits(path, images)
    reference = ort_logits(trained.onnx, images)
    assert data["images"] == len(files) == 150
    top1 = (candidate.argmax(1) == reference.argmax(1)).mean()
    cosine = (candidate * reference).sum(1) / np.linalg.norm(candidate, axis=1) / np.linalg.norm(reference, axis=1)
    assert data["top1_agreement"] == pytest.approx(top1, abs=1.5 / len(files))
    # Inputs agree with torchvision to 1e-6, so only an INT8 rounding flip may move these a little;
    # another mean/std/crop moves them by far more.
    assert data["min_cosine"] == pytest.approx(cosine.min(), abs=2e-3)
    assert data["max_abs_err"] == pytest.approx(np.abs(candidate - reference).max(), rel=0.02)
    assert data["worst_sample"]["rel_err"] == pytest.approx(compare_logits(candidate, reference).rel_err.max(), rel=0.02)


def test_trained_export_is_made_by_this_sessions_code(trained):
    """Only the trained weights are cached; the ONNX export comes from the exporter under test, every session."""
    assert not trained.onnx.resolve().is_relative_to(trained.root.resolve())
    assert trained.onnx.stat().st_mtime >= trained.checkpoint.stat().st_mtime


def test_int8_ranges_cover_every_calibration_image(quantized, trained):
    """Input and MaxPool-output scales equal an independent min/max over all 150 calibration images (19 batches)."""
    from onnx import helper

    path, summary = quantized("int8")
    assert summary["calibration"]["images"] == 150
    fp32 = onnx.load(str(trained.onnx))
    watched = ["input"] + [n.output[0] for n in fp32.graph.node if n.op_type == "MaxPool"]
    assert len(watched) == 4
    del fp32.graph.output[:]
    fp32.graph.output.extend(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in watched)
    session = ort.InferenceSession(fp32.SerializeToString(), providers=["CPUExecutionProvider"])
    import torchvision

    dataset = torchvision.datasets.ImageFolder(str(trained.calib), transform=tm.transforms())
    low, high = np.full(len(watched), np.inf), np.full(len(watched), -np.inf)
    for image, _ in dataset:
        outputs = session.run(None, {"input": image.numpy()[None]})
        low, high = np.minimum(low, [o.min() for o in outputs]), np.maximum(high, [o.max() for o in outputs])
    proto = onnx.load(str(path))
    inits = _initializers(proto)
    scales = {n.input[0]: float(inits[n.input[1]]) for n in proto.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in watched}
    assert set(scales) == set(watched)
    for name, lo, hi in zip(watched, low, high):
        assert scales[name] == pytest.approx((max(hi, 0) - min(lo, 0)) / 255, rel=1e-5), f"{name}: the calibration images span [{lo}, {hi}]"


def test_default_256_calibration_images_on_the_trained_model(cli, trained, tmp_path):
    out = tmp_path / "d.int8.onnx"
    data = json.loads(cli.ok("quantize", trained.onnx, "-p", "int8", "--calib", trained.train, "--holdout", trained.val, "--holdout-samples", 50,
                             "-o", out, "--json", "--no-latency").stdout)
    assert data["calibration"]["images"] == 256  # 32 batches of 8: onnxruntime 1.32 alone kept none of them
    from alexnet_deploy.record import read_record

    assert read_record(onnx.load(str(out), load_external_data=False)).details["quantization"]["calibration"] == data["calibration"]


def test_verify_fails_a_broken_int8_model(cli, trained, quantized, tmp_path):
    proto = onnx.load(str(quantized("int8")[0]))
    producers = {out: node for node in proto.graph.node for out in node.output}
    gemm = [n for n in proto.graph.node if n.op_type == "Gemm"][0]
    scale_name = producers[gemm.input[1]].input[1]
    for init in proto.graph.initializer:
        if init.name == scale_name:  # wreck the first fully connected layer's weights
            scales = numpy_helper.to_array(init).copy()
            scales[::2] *= -40
            init.CopyFrom(numpy_helper.from_array(scales, init.name))
    broken = tmp_path / "broken.int8.onnx"
    onnx.save(proto, str(broken))
    result = cli.fails(1, "verify", broken, "--reference", trained.onnx, "--images", trained.val)
    assert "FAIL" in result.stdout and "top-1" in result.stdout


def test_quantize_refuses_bad_input(cli, trained, quantized, tmp_path):
    out = tmp_path / "out.onnx"
    empty = tmp_path / "empty"
    empty.mkdir()
    junk = tmp_path / "junk" / "cls"
    junk.mkdir(parents=True)
    for i in range(3):
        (junk / f"{i}.jpg").write_bytes(b"not an image")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(trained.onnx.read_bytes()[:5000])
    cases = {
        "needs representative images": ["-p", "int8"],
        "does not exist": ["-p", "int8", "--calib", tmp_path / "missing"],
        "holds no image files": ["-p", "int8", "--calib", empty],
        "could be decoded": ["-p", "int8", "--calib", junk.parent],
        "no dynamic quantization": ["-p", "int8-dynamic", "--target", "tensorrt"],
        "'int4' is not one of": ["-p", "int4"],
        "applies to static int8 only": ["-p", "fp16", "--method", "entropy"],
    }
    for message, args in cases.items():
        result = cli.fails(2, "quantize", trained.onnx, "-o", out, *args)
        assert message in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) <= 3
        assert not out.exists()
    already = quantized("int8")[0]
    assert "already int8" in cli.fails(2, "quantize", already, "-p", "int8", "--calib", trained.calib, "-o", out).stderr
    assert "not a readable ONNX model" in cli.fails(2, "quantize", corrupt, "-p", "fp16", "-o", out).stderr
    good = tmp_path / "keep.onnx"
    good.write_bytes(b"previous result")
    cli.fails(2, "quantize", trained.onnx, "-p", "int8", "--calib", junk.parent, "-o", good)
    assert good.read_bytes() == b"previous result"
    assert not list(tmp_path.glob(".*.tmp"))


def test_histogram_calibration_methods_run(cli, trained, tmp_path):
    """entropy/percentile stack per-batch outputs (onnxruntime needs equal batches): 13 images must work."""
    out = tmp_path / "e.onnx"
    data = json.loads(cli.ok("quantize", trained.onnx, "-p", "int8", "--calib", trained.calib, "--calib-samples", 13, "--method", "entropy",
                             "--holdout", trained.val, "--holdout-samples", 100, "-o", out, "--json", "--no-latency").stdout)
    assert data["calibration"]["images"] == 13 and data["calibration"]["method"] == "entropy"
    assert data["comparison"]["top1_agreement"] >= 0.9


def test_default_holdout_is_drawn_from_every_class(trained):
    from alexnet_deploy.record import read_record
    from alexnet_deploy.quantize.pipeline import plan_images

    record = read_record(onnx.load(str(trained.onnx), load_external_data=False))
    calibration, compared, notes = plan_images("int8", trained.calib, None, 120, 500, record)
    assert len(calibration) == 120 and len(compared.batch) == 30
    assert set(calibration.images.paths).isdisjoint(compared.used.paths)
    assert len(set(compared.targets)) == 5  # a random draw, not the first classes in folder order
    _, small, _ = plan_images("int8", trained.calib, None, 64, 20, record)
    assert len(small.batch) == 20 and len(set(small.targets)) >= 4


def test_verify_int8_without_metadata_uses_graph_precision(cli, trained, quantized, tmp_path):
    proto = onnx.load(str(quantized("int8")[0]))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    data = json.loads(cli.ok("verify", bare, "--reference", trained.onnx, "--images", trained.calib, "--json", "-").stdout)
    assert data["precision"] == "int8" and data["passed"]
    mixed = json.loads(cli.ok("verify", quantized("fp16")[0], "--reference", trained.onnx, "--samples", 4, "--json", "-").stdout)
    assert mixed["samples"] == 4 + 32 and mixed["images"] == 32  # --samples adds random tensors to the synthetic images


@pytest.mark.parametrize("tag", ["fp16", "int8", "int8-dynamic"])
def test_classifier_runs_every_precision(quantized, trained, tag):
    from alexnet_deploy import Classifier

    paths = sorted(trained.val.rglob("*.png"))[::8]
    with Classifier(trained.onnx) as fp32, Classifier(quantized(tag)[0]) as other:
        assert other.precision == tag and other.labels == fp32.labels
        base = [top[0][0] for top in fp32.predict(paths, topk=1)]
        got = [top[0][0] for top in other.predict(paths, topk=1)]
    assert np.mean([a == b for a, b in zip(base, got)]) >= 0.95
