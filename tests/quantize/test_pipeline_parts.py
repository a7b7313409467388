"""The quantize pipeline's parts between the option checks and the search: image sets, the
conversion dispatch, the comparison figures, the latency comparison, the record entry.

References are computed here: the changed images and counts with numpy, the preprocessed
arrays with torchvision's transforms, the source hash with hashlib; the converters and the
timing helper are replaced by recorders so what the pipeline passes them is checked exactly.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from alexnet_deploy.datasets import open_image_set
from alexnet_deploy.errors import InputError
from alexnet_deploy.quantize import pipeline
from alexnet_deploy.record import ModelRecord, Preprocessing
from alexnet_deploy.runtimes.base import RuntimeInfo
from tiny_model import write_images

SPEC = Preprocessing(resize=20, crop=16, mean=(0.5, 0.45, 0.4), std=(0.25, 0.25, 0.3))
LABELS = ["ant", "bee", "cat"]
RECORD = ModelRecord(labels=tuple(LABELS), preprocessing=SPEC, layout="tiny")


class Steps:
    """A progress receiver that keeps every call."""

    def __init__(self):
        self.messages, self.starts, self.advanced = [], [], 0

    def __call__(self, message):
        self.messages.append(message)

    def start(self, description, total):
        self.starts.append((description, total))

    def advance(self, units=1):
        self.advanced += units


def _torchvision(paths, spec=SPEC):
    from torchvision import transforms

    pipe = transforms.Compose([transforms.Resize(spec.resize), transforms.CenterCrop(spec.crop), transforms.ToTensor(), transforms.Normalize(spec.mean, spec.std)])
    return np.stack([pipe(Image.open(p).convert("RGB")).numpy() for p in paths])


def _folder(root: Path, per_class=2, broken=()):
    for k, name in enumerate(LABELS):
        write_images(root / name, per_class, seed=k)
    for relative in broken:
        (root / relative).write_bytes(b"not an image")
    return open_image_set(root, "folder")


# --- _preprocess_set and CalibrationImages ---------------------------------------------------


def test_preprocess_set_keeps_the_decodable_images_with_their_classes(tmp_path):
    pytest.importorskip("torchvision")
    images = _folder(tmp_path / "f", 2, broken=["bee/0-broken.png"])
    steps = Steps()
    record = RECORD
    result = pipeline._preprocess_set(images, record, "held-out", steps)
    good = [p for p in images.paths if "broken" not in p.name]
    np.testing.assert_allclose(result.batch, _torchvision(good), atol=1e-5)
    assert result.used.paths == good and result.skipped == 1
    assert result.targets == [LABELS.index(p.parent.name) for p in good] and result.classes == LABELS
    assert result.description == f"6 held-out images from {images.root}"
    assert steps.starts == [("preprocessing 7 held-out images", 7)] and steps.advanced == 7


def test_preprocess_set_with_nothing_decodable_names_the_folder(tmp_path):
    root = tmp_path / "f"
    (root / "ant").mkdir(parents=True)
    (root / "ant" / "x.png").write_bytes(b"no")
    (root / "ant" / "y.png").write_bytes(b"no")
    with pytest.raises(InputError) as err:
        pipeline._preprocess_set(open_image_set(root, "folder"), RECORD, "calibration", Steps())
    assert err.value.problem == f"none of the 2 image files under {root} could be decoded."
    assert err.value.fix == "point it at a folder of readable .jpg/.png images"


def test_calibration_images_feed_every_decodable_image_once_in_the_order_asked(tmp_path):
    pytest.importorskip("torchvision")
    images = _folder(tmp_path / "f", 3, broken=["cat/0-broken.png"])
    calibration = pipeline.CalibrationImages(SPEC, images)
    assert len(calibration) == 10
    order = [9, 0, 3, 1, 7, 2, 8, 4, 6, 5]
    fed = [item for chunk in calibration.batches(3, order, ahead=1) for item in chunk]
    assert all(len(chunk) <= 3 for chunk in calibration.batches(3, order))
    broken = images.paths.index(tmp_path / "f" / "cat" / "0-broken.png")
    assert [i for i, _ in fed] == [i for i in order if i != broken]
    np.testing.assert_allclose(np.stack([a for _, a in fed]), _torchvision([images.paths[i] for i, _ in fed]), atol=1e-5)
    assert calibration.undecodable == {broken}
    described = calibration.describe([i for i, _ in fed] + [0])  # an index fed twice counts once
    assert described["images"] == 9 and described["skipped"] == 1 and described["source"] == "folder"
    assert described["files_sha256"] == images.subset(sorted(i for i, _ in fed)).digest()
    assert described["files_sha256"] != images.digest()
    default = [i for chunk in calibration.batches(4) for i, _ in chunk]
    assert default == [i for i in range(10) if i != broken]


def test_synthetic_calibration_images_are_seeded_and_say_so():
    one = pipeline.CalibrationImages(SPEC, synthetic=(5, 3))
    two = pipeline.CalibrationImages(SPEC, synthetic=(5, 3))
    other = pipeline.CalibrationImages(SPEC, synthetic=(5, 4))
    assert len(one) == 5
    a = np.stack([x for chunk in one.batches(2) for _, x in chunk])
    b = np.stack([x for chunk in two.batches(5) for _, x in chunk])
    c = np.stack([x for chunk in other.batches(5) for _, x in chunk])
    assert a.shape == (5, 3, 16, 16) and np.array_equal(a, b) and not np.array_equal(a, c)
    assert one.describe([0, 1, 2, 3, 4]) == {"images": 5, "skipped": 0, "source": "synthetic", "files_sha256": None}


def test_synthetic_comparison_images_have_no_labels():
    result = pipeline._synthetic(4, RECORD, 1, "comparison")
    assert result.batch.shape == (4, 3, 16, 16) and result.batch.dtype == np.float32
    assert result.description == "4 synthetic comparison images" and result.targets is None and result.used is None
    assert np.array_equal(result.batch, pipeline._synthetic(4, RECORD, 1, "comparison").batch)  # seeded
    assert not np.array_equal(result.batch, pipeline._synthetic(4, RECORD, 2, "comparison").batch)
    assert not np.array_equal(result.batch, pipeline._synthetic(4, RECORD, 0, "comparison").batch)


# --- _truth, _accuracy, _changes ------------------------------------------------------------


def test_truth_maps_folder_classes_to_the_models_label_order():
    images = SimpleNamespace(targets=[0, 1, 2, 1], classes=["bee", "cat", "ant"])
    notes = []
    assert pipeline._truth(images, LABELS, notes).tolist() == [1, 2, 0, 2] and notes == []
    assert pipeline._truth(SimpleNamespace(targets=None, classes=None), LABELS, notes) is None and notes == []
    mismatched = SimpleNamespace(targets=[0, 1], classes=["dog", "eel"])
    assert pipeline._truth(mismatched, LABELS, notes) is None
    assert len(notes) == 1 and notes[0].startswith("accuracy not computed: ")


def test_accuracy_is_the_share_of_top1_hits():
    logits = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.0, 0.2, 0.7], [0.3, 0.2, 0.1]])
    assert pipeline._accuracy(logits, np.array([1, 0, 1, 1])) == 0.5
    assert pipeline._accuracy(logits, None) is None


def test_changes_list_the_images_whose_top1_moved_with_counts_from_numpy(tmp_path):
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(40, 3))
    candidate = reference.copy()
    moved = [3, 17, 18, 30]
    for i in moved:
        candidate[i] = np.roll(reference[i], 1)
    truth = reference.argmax(1).copy()
    truth[17] = candidate[17].argmax()  # the candidate fixed one
    paths = [tmp_path / f"{i}.png" for i in range(40)]
    compared = SimpleNamespace(used=SimpleNamespace(paths=paths))
    result = pipeline._changes(reference, candidate, truth, compared, LABELS)
    flips = np.flatnonzero(reference.argmax(1) != candidate.argmax(1))
    assert flips.tolist() == moved
    assert result["changed_count"] == 4 and result["flip_rate"]["count"] == 4 and result["flip_rate"]["n"] == 40
    assert [row["image"] for row in result["changed_images"]] == [str(paths[i]) for i in moved]
    assert [row["candidate"] for row in result["changed_images"]] == [LABELS[candidate[i].argmax()] for i in moved]
    assert [row["truth"] for row in result["changed_images"]] == [LABELS[truth[i]] for i in moved]
    change = result["accuracy_change"]
    assert (change["broken"], change["fixed"], change["n"]) == (3, 1, 40)
    assert change["drop_points"] == pytest.approx(100 * (3 - 1) / 40)
    unlabelled = pipeline._changes(reference, candidate, None, SimpleNamespace(used=None), LABELS)
    assert "accuracy_change" not in unlabelled
    assert [row["image"] for row in unlabelled["changed_images"]] == [f"synthetic image {i}" for i in moved]
    assert all("truth" not in row for row in unlabelled["changed_images"])


# --- _convert -------------------------------------------------------------------------------


@pytest.fixture
def converters(monkeypatch):
    from alexnet_deploy.quantize import recipes

    calls = []
    monkeypatch.setattr(recipes, "to_fp16", lambda proto: calls.append(("fp16", proto)) or "fp16 graph")
    monkeypatch.setattr(recipes, "quantize_dynamic_int8", lambda source: calls.append(("dynamic", source)) or "dynamic graph")
    used = {"value": [0, 1, 2]}

    def static(source, calibration, target, method, input_name, batch, fixed, progress):
        calls.append(("static", source, calibration, target, method, input_name, batch, fixed))
        progress("calibrating")  # the caller's progress, not a stand-in
        return "static graph", used["value"]

    monkeypatch.setattr(recipes, "quantize_static_int8", static)
    return SimpleNamespace(calls=calls, used=used)


def _proto(batch_dim):
    from onnx import TensorProto, helper

    dim = batch_dim if batch_dim is not None else "N"
    graph = helper.make_graph([helper.make_node("Identity", ["pixels"], ["out"])], "g",
                              [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [dim, 3, 4, 4])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [dim, 3, 4, 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_convert_dispatches_each_precision_to_its_recipe(converters, tmp_path):
    steps = Steps()
    source = tmp_path / "m.onnx"
    proto = _proto(None)
    assert pipeline._convert(source, proto, "fp16", "cpu", "minmax", None, steps) == ("fp16 graph", None)
    assert pipeline._convert(source, proto, "int8-dynamic", "cpu", "minmax", None, steps) == ("dynamic graph", None)
    assert converters.calls == [("fp16", proto), ("dynamic", source)]
    assert steps.messages == ["converting to float16", "quantizing Gemm/MatMul weights"]


@pytest.mark.parametrize("batch_dim, method, batch, fixed", [(None, "minmax", pipeline.CALIB_BATCH, False), (None, "entropy", 1, False), (None, "percentile", 1, False), (4, "minmax", 4, True), (4, "entropy", 4, True)])
def test_static_int8_calibrates_in_batches_the_model_and_the_calibrator_accept(converters, tmp_path, batch_dim, method, batch, fixed):
    images = _folder(tmp_path / "f", 1)
    calibration = pipeline.CalibrationImages(SPEC, images)
    steps = Steps()
    graph, entry = pipeline._convert(tmp_path / "m.onnx", _proto(batch_dim), "int8", "tensorrt", method, calibration, steps)
    assert graph == "static graph" and steps.messages == ["calibrating"]
    assert converters.calls == [("static", tmp_path / "m.onnx", calibration, "tensorrt", method, "pixels", batch, fixed)]
    assert entry == {"method": method, "images": 3, "skipped": 0, "source": "folder", "files_sha256": images.digest()}


def test_static_int8_with_no_image_decoded_names_where_they_came_from(converters, tmp_path):
    converters.used["value"] = []
    folder = pipeline.CalibrationImages(SPEC, _folder(tmp_path / "f", 1))
    with pytest.raises(InputError) as err:
        pipeline._convert(tmp_path / "m.onnx", _proto(None), "int8", "cpu", "minmax", folder, Steps())
    assert err.value.problem == f"none of the 3 image files under {tmp_path / 'f'} could be decoded."
    assert err.value.fix == "point it at a folder of readable .jpg/.png images"
    with pytest.raises(InputError) as err:
        pipeline._convert(tmp_path / "m.onnx", _proto(None), "int8", "cpu", "minmax", pipeline.CalibrationImages(SPEC, synthetic=(2, 0)), Steps())
    assert err.value.problem == "none of the 2 image files under the calibration set could be decoded."


# --- latency_comparison ---------------------------------------------------------------------


class _Model:
    def __init__(self, name, max_batch=None):
        self.name, self.max_batch, self.batches = name, max_batch, []

    def info(self):
        return RuntimeInfo("ort", "cpu", "fp32", "input", (self.max_batch, 3, 4, 4), max_batch=self.max_batch)

    def run(self, batch):
        self.batches.append(batch)


@pytest.fixture
def medians(monkeypatch):
    import alexnet_deploy.timing as timing

    calls = []
    table = {"fp32": [0.004, 0.006, 0.005], "other": [0.002, 0.001, 0.003]}

    def round_robin_medians(runners, rounds, min_runs):
        calls.append((sorted(runners), rounds, min_runs))
        for run in runners.values():
            run()
        return table

    monkeypatch.setattr(timing, "round_robin_medians", round_robin_medians)
    return SimpleNamespace(calls=calls, table=table)


def test_latency_is_compared_at_batch_1_and_32_on_the_sample_repeated(medians):
    fp32, other = _Model("fp32"), _Model("other")
    sample = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    result = pipeline.latency_comparison(fp32, other, sample)
    assert set(result) == {"batch_1", "batch_32"}
    for size in (1, 32):
        assert result[f"batch_{size}"] == {"fp32_ms": pytest.approx(5.0), "ms": pytest.approx(2.0), "speedup": pytest.approx(2.5)}
    assert medians.calls == [(["fp32", "other"], 3, 9), (["fp32", "other"], 3, 2)]  # max(1, 8 // size) + 1 runs at least
    assert [b.shape[0] for b in fp32.batches] == [1, 32] and [b.shape[0] for b in other.batches] == [1, 32]
    np.testing.assert_array_equal(fp32.batches[1], np.resize(sample, (32, 3, 4, 4)))
    np.testing.assert_array_equal(fp32.batches[1][2], sample[0])  # two images, repeated
    assert all(np.array_equal(a, b) for a, b in zip(fp32.batches, other.batches))


def test_sub_millisecond_times_and_odd_batches(medians):
    medians.table["fp32"], medians.table["other"] = [0.0009], [0.0003]
    result = pipeline.latency_comparison(_Model("fp32"), _Model("other"), np.zeros((1, 3, 4, 4), np.float32), batches=(3,))
    assert result["batch_3"]["speedup"] == pytest.approx(3.0) and result["batch_3"]["ms"] == pytest.approx(0.3)
    assert medians.calls == [(["fp32", "other"], 3, 3)]  # 8 // 3 + 1, a whole number of runs


def test_a_fixed_batch_model_is_timed_at_its_batch_only_and_a_zero_time_has_no_speedup(medians):
    medians.table["other"] = [0.0, 0.0, 0.0]
    fp32, other = _Model("fp32", max_batch=4), _Model("other", max_batch=4)
    result = pipeline.latency_comparison(fp32, other, np.zeros((1, 3, 4, 4), np.float32), batches=(1, 32), rounds=5)
    assert list(result) == ["batch_4"] and result["batch_4"]["speedup"] is None and result["batch_4"]["ms"] == 0.0
    assert medians.calls == [(["fp32", "other"], 5, 3)]


# --- the record entry and the candidate line -------------------------------------------------


def test_quantization_entry_names_the_recipe_and_hashes_the_source(tmp_path):
    from alexnet_deploy.quantize.recipes import RECIPES

    source = tmp_path / "m.onnx"
    source.write_bytes(b"source bytes")
    entry = pipeline._quantization_entry("int8", "cpu", source, {"method": "minmax"}, None)
    assert entry == {"precision": "int8", "recipe": RECIPES[("int8", "cpu")], "target": "cpu",
                     "source_onnx_sha256": hashlib.sha256(b"source bytes").hexdigest(), "calibration": {"method": "minmax"}}
    searched = pipeline._quantization_entry("int8", "tensorrt", source, None, {"graph": "equalized"})
    assert searched["search"] == {"graph": "equalized"} and searched["recipe"] == RECIPES[("int8", "tensorrt")]
    assert searched["target"] == "tensorrt" and searched["calibration"] is None


def test_candidate_text_says_the_step_recipe_and_what_was_measured():
    with_accuracy = SimpleNamespace(step=5, recipe={"graph": "equalized", "method": "minmax", "float_layers": ["conv2"],
                                                     "measured": {"accuracy": 0.8125, "drop_points": 0.4}})
    assert pipeline._candidate_text(with_accuracy) == "step 5: equalized, minmax, 1 layer(s) in float; top-1 81.2% (-0.4 points)"
    gained = SimpleNamespace(step=2, recipe={"graph": "original", "method": "entropy", "float_layers": [],
                                             "measured": {"accuracy": 0.9, "drop_points": -0.04}})
    assert pipeline._candidate_text(gained) == "step 2: original, entropy; top-1 90.0% (+0.0 points)"
    unlabelled = SimpleNamespace(step=1, recipe={"graph": "original", "method": "percentile", "float_layers": [],
                                                 "measured": {"accuracy": None, "top1_agreement": 0.975}})
    assert pipeline._candidate_text(unlabelled) == "step 1: original, percentile; top-1 agreement with FP32 97.5%"


def test_the_outcome_as_json_names_its_files_as_strings_and_the_interrupt_reads_as_what_was_left(tmp_path):
    import json

    outcome = pipeline.QuantizeOutcome(output=tmp_path / "m.int8.onnx", source=tmp_path / "m.onnx", precision="int8", target="cpu", recipe="minmax",
                                       calibration={"images": 3}, comparison={"images": 2}, sizes={"bytes": 1}, latency={})
    data = json.loads(json.dumps(outcome.to_dict()))  # JSON-native as the CLI writes it
    assert data["output"] == str(tmp_path / "m.int8.onnx") and data["source"] == str(tmp_path / "m.onnx")
    assert data["written"] is True and data["warnings"] == [] and data["search"] is None and data["calibration"] == {"images": 3}
    stop = pipeline.QuantizeInterrupted("interrupted; nothing was written.")
    assert str(stop) == "interrupted; nothing was written." and stop.args == ("interrupted; nothing was written.",)
    assert (stop.written, stop.step, stop.steps) == (None, None, 0) and isinstance(stop, KeyboardInterrupt)
