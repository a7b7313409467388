"""Tests for the bugs of the second planted-bug audit (issue 22) that passed the fast tier.

Each test asserts against a reference computed here, independently of the code under test:
the documented subset drawn with numpy, a hand-made confusion matrix sorted in Python, the
thread counts read off onnxruntime's own session object, the preprocessing spelled out from
the layout's documented recipe. All run in seconds (tiny onnx.helper models, small images).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from alexnet_deploy.progress import Progress
from alexnet_deploy.quantize.search import Budget
from tiny_model import CLASSES, tiny_model, write_images


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.onnx")


def _image_folder(root: Path, per_class: int, classes=CLASSES, seed: int = 0) -> list[Path]:
    """An ImageFolder with ``per_class`` images per class; its files in torchvision's ImageFolder order
    (classes sorted, files sorted within each class), listed here rather than by the code under test."""
    for k, name in enumerate(classes):
        write_images(root / name, per_class, seed=seed + k)
    return [path for name in sorted(classes) for path in sorted((root / name).iterdir())]


# ---------------------------------------------------------------------------------------------
# eval --limit N: the documented seeded random subset, not the first N files


def test_eval_limit_scores_the_seeded_random_subset_not_the_first_files(model, tmp_path):
    from alexnet_deploy.evaluate import evaluate

    files = _image_folder(tmp_path / "val", 10)
    limit = 12
    report = evaluate(model, tmp_path / "val", limit=limit, keep_predictions=True, workers=1)
    # docs/images.md: "`--limit N` scores a seeded random subset"; the draw is numpy's seeded
    # permutation (seed 0) cut after N, in file order, as every subset draw in the toolkit.
    expected = [str(files[i]) for i in sorted(np.random.default_rng(0).permutation(len(files))[:limit])]
    assert report.n == limit and report.paths == expected
    assert report.paths != [str(p) for p in files[:limit]]
    # every class keeps its share on average: the first 12 files would be 10 apples and 2 bananas
    assert {Path(p).parent.name for p in report.paths} == set(CLASSES)
    assert sorted(report.per_class) == sorted(CLASSES)
    again = evaluate(model, tmp_path / "val", limit=limit, keep_predictions=True, workers=1)
    assert again.paths == report.paths  # seeded: the same subset every run


def test_eval_limit_at_or_above_the_folder_size_scores_every_file(model, tmp_path):
    from alexnet_deploy.evaluate import evaluate

    files = _image_folder(tmp_path / "val", 3)
    for limit in (len(files), len(files) + 5):
        report = evaluate(model, tmp_path / "val", limit=limit, keep_predictions=True, workers=1)
        assert report.paths == [str(p) for p in files]


# ---------------------------------------------------------------------------------------------
# eval's most frequent confusions: most frequent first


def _report(labels, confusion):
    from alexnet_deploy.evaluate import EvalReport

    return EvalReport(model="m.onnx", runtime="ort", precision="fp32", n=int(np.sum(confusion)), top1=0.0, top5=0.0, labels=list(labels),
                      per_class={}, confusion=[list(map(int, row)) for row in confusion], images_per_s=0.0, model_images_per_s=None,
                      batch=1, matched="by name")


def _reference_confusions(labels, confusion, count):
    """Off-diagonal (true, predicted, count) with count > 0, most frequent first (distinct counts: no ties)."""
    pairs = [(labels[r], labels[c], int(confusion[r][c])) for r in range(len(labels)) for c in range(len(labels)) if r != c and confusion[r][c] > 0]
    return sorted(pairs, key=lambda p: -p[2])[:count]


def test_top_confusions_are_the_most_frequent_mistakes_first():
    labels = ["a", "b", "c", "d"]
    confusion = [[50, 3, 0, 1],
                 [7, 40, 0, 0],
                 [0, 4, 60, 2],
                 [0, 0, 9, 30]]  # the diagonal dwarfs every mistake: it never counts
    report = _report(labels, confusion)
    assert report.top_confusions(3) == [("d", "c", 9), ("b", "a", 7), ("c", "b", 4)]
    assert report.top_confusions() == _reference_confusions(labels, confusion, 5)
    assert report.top_confusions(10) == _reference_confusions(labels, confusion, 10)  # all six, none with count 0
    assert report.top_confusions(1) == [("d", "c", 9)]
    assert _report(labels, np.diag([5, 6, 7, 8]).tolist()).top_confusions() == []


def test_eval_prints_the_most_frequent_confusions_for_many_classes():
    """Over 20 classes, eval's text lists the 10 most frequent confusions, most frequent first."""
    from rich.console import Console

    from alexnet_deploy.cli.render import eval_table

    labels = [f"class{i:02d}" for i in range(25)]
    rng = np.random.default_rng(3)
    confusion = np.diag(rng.integers(50, 60, 25))
    counts = rng.permutation(np.arange(1, 31))  # 30 distinct mistake counts in random places
    cells = [(r, c) for r in range(25) for c in range(25) if r != c]
    for k, index in enumerate(rng.choice(len(cells), 30, replace=False)):
        confusion[cells[index]] = counts[k]
    console = Console(width=200, record=True)
    console.print(eval_table(_report(labels, confusion.tolist())))
    text = console.export_text()
    lines = [f"{t} -> {p}: {n}" for t, p, n in _reference_confusions(labels, confusion.tolist(), 10)]
    positions = [text.index(line) for line in lines]
    assert positions == sorted(positions) and lines[0].endswith(": 30")


# ---------------------------------------------------------------------------------------------
# bench: "vs onnxruntime FP32" is against the onnxruntime FP32 row


def _bench_row(runtime, model, precision, batch, ips):
    lat = {k: 1000 * batch / ips for k in ("mean", "p50", "p90", "p99", "min", "max")}
    return {"runtime": runtime, "model": model, "precision": precision, "device": "cpu", "batch": batch, "io": "host",
            "latency_ms": lat, "throughput_ips": ips, "iterations": 3}


def test_fastest_speedup_is_against_the_onnxruntime_fp32_row_only():
    from alexnet_deploy.bench.runner import fastest_lines, fastest_per_batch

    results = [
        _bench_row("ort", "/m/seed.int8.onnx", "int8", 1, 300.0),       # onnxruntime, but not FP32: listed first
        _bench_row("ort", "/m/seed.fp16.onnx", "fp16", 1, 80.0),
        _bench_row("openvino", "/m/seed.onnx", "fp32", 1, 150.0),       # FP32, but not onnxruntime
        _bench_row("ort", "/m/seed.onnx", "fp32", 1, 100.0),            # the baseline
        _bench_row("torch", "/m/seed.pth", "fp32", 1, 60.0),
        _bench_row("ort", "/m/seed.int8.onnx", "int8", 8, 400.0),       # batch 8: no onnxruntime FP32 row
        _bench_row("openvino", "/m/seed.onnx", "fp32", 8, 500.0),
    ]
    fastest = fastest_per_batch(results)
    assert [f["batch"] for f in fastest] == [1, 8]
    one, eight = fastest
    assert (one["runtime"], one["precision"], one["model"], one["throughput_ips"]) == ("ort", "int8", "seed.int8.onnx", 300.0)
    assert one["speedup_vs_ort_fp32"] == pytest.approx(300.0 / 100.0)
    assert one["latency_ms_p50"] == pytest.approx(1000 / 300.0)
    assert (eight["runtime"], eight["throughput_ips"], eight["speedup_vs_ort_fp32"]) == ("openvino", 500.0, None)
    lines = fastest_lines(fastest)
    assert lines[0] == "fastest at batch 1: ort int8 (seed.int8.onnx) 300.0 img/s, p50 3.33 ms, 3.00x onnxruntime FP32"
    assert lines[1] == "fastest at batch 8: openvino fp32 (seed.onnx) 500.0 img/s, p50 16.00 ms (no onnxruntime FP32 row to compare with)"


def test_fastest_baseline_ignores_other_onnxruntime_providers():
    """ort-cuda and ort-trt rows are onnxruntime too, but the baseline is onnxruntime FP32 on the CPU (runtime 'ort')."""
    from alexnet_deploy.bench.runner import fastest_per_batch

    results = [_bench_row("ort-cuda", "/m/seed.onnx", "fp32", 4, 900.0), _bench_row("ort", "/m/seed.onnx", "fp32", 4, 90.0)]
    (best,) = fastest_per_batch(results)
    assert best["runtime"] == "ort-cuda" and best["speedup_vs_ort_fp32"] == pytest.approx(10.0)


# ---------------------------------------------------------------------------------------------
# --threads is onnxruntime's intra-op thread count (read off the session itself)


def test_threads_set_onnxruntimes_intra_op_threads(model, library_thread_defaults):
    from alexnet_deploy.classifier import Classifier
    from alexnet_deploy.runtimes import open_runtime
    from alexnet_deploy.runtimes.ort import OrtRuntime

    default_inter = __import__("onnxruntime").SessionOptions().inter_op_num_threads
    with OrtRuntime(model, threads=3) as rt:
        options = rt.session.get_session_options()
        assert (options.intra_op_num_threads, options.inter_op_num_threads) == (3, default_inter)
    with open_runtime(model, "ort", threads=2) as rt:  # predict/eval/bench --threads
        options = rt.session.get_session_options()
        assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, default_inter)
    with Classifier(model, threads=1) as classifier:  # the Python API and predict
        options = classifier._runtime.session.get_session_options()
        assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, default_inter)
    with OrtRuntime(model) as rt:  # no --threads: onnxruntime's own choice
        options = rt.session.get_session_options()
        assert (options.intra_op_num_threads, options.inter_op_num_threads) == (0, default_inter)


# ---------------------------------------------------------------------------------------------
# a layout's --input-size override keeps its resize mode


def test_input_size_override_keeps_each_layouts_resize_mode():
    from alexnet_deploy.checkpoints.layouts import LAYOUTS, default_preprocessing
    from alexnet_deploy.record import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

    size = 192
    for name, layout in LAYOUTS.items():
        spec = layout.preprocessing
        got = default_preprocessing(layout, size)
        if spec.resize_mode == "exact":  # Resize((N, N)) to the new size, then a crop of all of it
            want = Preprocessing(size, size, spec.mean, spec.std, spec.interpolation, "exact")
        else:  # torchvision's 256/224 ratio at the new size
            want = Preprocessing(round(size * 256 / 224), size, spec.mean, spec.std, spec.interpolation, "shorter")
        assert got == want, name
        assert default_preprocessing(layout, spec.crop) == spec, name  # no override: the layout's own
    assert [n for n, layout in LAYOUTS.items() if layout.preprocessing.resize_mode == "exact"] == ["layers-fc", "half-width"]
    assert default_preprocessing(None, 227) == Preprocessing(256, 227, IMAGENET_MEAN, IMAGENET_STD)


def test_input_size_override_on_a_half_width_checkpoint_keeps_exact_resize(half_width):
    """Through resolve_model (what export/eval/verify --input-size use): seed 003 trained with Resize((224, 224))."""
    from alexnet_deploy.checkpoints.options import ModelOptions
    from alexnet_deploy.checkpoints.resolve import resolve_model
    from alexnet_deploy.record import Preprocessing

    path, _, _ = half_width
    resolved = resolve_model(path, ModelOptions(input_size=225))
    assert resolved.input_size == 225
    assert resolved.preprocessing == Preprocessing(225, 225, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bilinear", "exact")


# ---------------------------------------------------------------------------------------------
# quantize without --holdout: the comparison images are never calibration images


def _record(model):
    from alexnet_deploy.record import read_record_from_path

    return read_record_from_path(model)


@pytest.mark.parametrize("calib_samples, holdout_samples, calibrated, compared_count", [
    (256, 500, 17, 4),   # 21 images <= 256: a fifth (4) is kept back
    (12, 500, 12, 9),    # 21 > 12: the 9 left after the 12 calibration images
    (12, 5, 12, 5),      # ... trimmed to --holdout-samples at random
    (21, 500, 17, 4),    # exactly --calib-samples images: still a fifth kept back, not all calibrated
])
def test_quantize_without_holdout_compares_on_images_it_did_not_calibrate_on(model, tmp_path, calib_samples, holdout_samples, calibrated, compared_count):
    from alexnet_deploy.quantize.pipeline import plan_images

    files = _image_folder(tmp_path / "calib", 7)  # 21 images
    calibration, compared, notes = plan_images("int8", tmp_path / "calib", None, calib_samples, holdout_samples, _record(model))
    calib_paths = list(calibration.images.paths)
    compared_paths = list(compared.used.paths)
    assert len(calib_paths) == len(calibration) == calibrated and len(compared.batch) == len(compared_paths) == compared_count
    assert set(calib_paths).isdisjoint(compared_paths)
    assert set(calib_paths) | set(compared_paths) <= set(files) and len(set(calib_paths)) == calibrated
    if holdout_samples >= len(files) - calibrated:
        assert set(calib_paths) | set(compared_paths) == set(files)  # nothing wasted
    assert compared.description.startswith(f"{compared_count} held-out images")
    assert not any("not held out" in note for note in notes)
    # a seeded random draw: not the first files in folder order, the same files every run
    assert calib_paths != files[:calibrated]
    again, compared_again, _ = plan_images("int8", tmp_path / "calib", None, calib_samples, holdout_samples, _record(model))
    assert list(again.images.paths) == calib_paths and list(compared_again.used.paths) == compared_paths


def test_quantize_with_two_calibration_images_keeps_one_back(model, tmp_path):
    from alexnet_deploy.quantize.pipeline import plan_images

    files = _image_folder(tmp_path / "two", 1, classes=CLASSES[:2])
    calibration, compared, notes = plan_images("int8", tmp_path / "two", None, 256, 500, _record(model))
    assert len(calibration.images.paths) == 1 and len(compared.used.paths) == 1
    assert set(calibration.images.paths) | set(compared.used.paths) == set(files) and notes == []


def test_quantize_with_a_single_calibration_image_says_the_comparison_reuses_it(model, tmp_path):
    from alexnet_deploy.quantize.pipeline import plan_images

    (only,) = _image_folder(tmp_path / "one", 1, classes=CLASSES[:1])
    calibration, compared, notes = plan_images("int8", tmp_path / "one", None, 256, 500, _record(model))
    assert list(calibration.images.paths) == [only] == list(compared.used.paths)
    assert any("not held out" in note for note in notes)


def test_quantize_cli_without_holdout_compares_on_images_it_did_not_calibrate_on(cli, model, tmp_path, monkeypatch):
    """End to end (tiny model, --no-search): the files the calibrator was fed and the files the comparison
    decoded, as seen by the image readers, are disjoint and together the whole folder."""
    import alexnet_deploy.quantize.pipeline as pipeline

    fed, compared = [], []
    real_stream, real_load = pipeline.ImageStream, pipeline.load_images

    def stream(sources, *args, **kwargs):
        fed.extend(Path(s) for s in sources)
        return real_stream(sources, *args, **kwargs)

    def load(paths, *args, **kwargs):
        compared.extend(Path(p) for p in paths)
        return real_load(paths, *args, **kwargs)

    monkeypatch.setattr(pipeline, "ImageStream", stream)
    monkeypatch.setattr(pipeline, "load_images", load)
    files = _image_folder(tmp_path / "calib", 5)  # 15 images: 12 calibrate, 3 compare
    data = json.loads(cli.ok("quantize", model, "-p", "int8", "--calib", tmp_path / "calib", "--no-search", "--no-latency",
                             "--max-drop", 100, "--min-agreement", 0, "-o", tmp_path / "tiny.int8.onnx", "--json").stdout)
    assert data["calibration"]["images"] == 12 and data["comparison"]["images"] == 3
    assert data["comparison"]["on"].startswith("3 held-out images")
    assert not any("not held out" in w for w in data["warnings"])
    assert len(set(fed)) == 12 and len(compared) == 3
    assert set(fed).isdisjoint(compared) and set(fed) | set(compared) == set(files)


# ---------------------------------------------------------------------------------------------
# Beyond the seven bugs: fast references for the modules added to [tool.mutmut]

SIX = ("ant", "bee", "cat", "dog", "eel", "fox")


@pytest.fixture(scope="module")
def six_class_model(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("six") / "six.onnx", classes=SIX)


def test_eval_scores_equal_a_bare_onnxruntime_loop_on_torchvision_inputs(six_class_model, tmp_path):
    """top-1, top-5, per-class figures and the confusion matrix, from onnxruntime on torchvision's inputs;
    a folder holding 4 of the 6 classes, one undecodable file skipped, batches that split the folder unevenly."""
    import onnxruntime as ort

    from alexnet_deploy.evaluate import evaluate
    from alexnet_deploy.record import read_record_from_path
    from tiny_model import torchvision_input

    folder = tmp_path / "val"
    present = ("bee", "dog", "eel", "fox")
    files = _image_folder(folder, 5, classes=present, seed=11)
    bad = folder / "dog" / "zz-broken.png"
    bad.write_bytes(b"not an image")
    spec = read_record_from_path(six_class_model).preprocessing
    session = ort.InferenceSession(str(six_class_model), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": np.stack([torchvision_input(p, spec) for p in files])})[0]
    truth = np.array([SIX.index(p.parent.name) for p in files])
    confusion = np.zeros((6, 6), int)
    for t, p in zip(truth, logits.argmax(1)):
        confusion[t, p] += 1
    top5 = np.array([t in np.argsort(-row, kind="stable")[:5] for t, row in zip(truth, logits)])

    report = evaluate(six_class_model, folder, batch=3, keep_predictions=True, workers=2)
    assert report.n == len(files) and report.labels == list(SIX) and report.batch == 3
    assert report.confusion == confusion.tolist()
    assert report.top1 == pytest.approx(float(np.mean(logits.argmax(1) == truth)))
    assert report.top5 == pytest.approx(float(top5.mean())) and report.top5 < 1.0
    assert set(report.per_class) == set(present)
    for name in present:
        rows = truth == SIX.index(name)
        assert report.per_class[name] == {"n": int(rows.sum()), "top1": pytest.approx(float(np.mean(logits[rows].argmax(1) == truth[rows]))),
                                          "top5": pytest.approx(float(top5[rows].mean()))}
    assert report.skipped == [str(bad)] and report.excluded == []
    assert report.matched == "by name" and report.notes == [] and report.runtime == "ort" and report.precision == "fp32"
    assert report.paths == [str(p) for p in files] and report.truths == truth.tolist() and report.predictions == logits.argmax(1).tolist()
    assert report.present_classes() == sorted({SIX.index(n) for n in present} | set(logits.argmax(1).tolist()))
    assert report.model_images_per_s is not None and report.model_images_per_s > 0 and report.images_per_s > 0
    assert report.to_dict()["confusion"] == confusion.tolist() and "predictions" not in report.to_dict()


def test_eval_refuses_what_it_cannot_score(model, tmp_path):
    from alexnet_deploy.errors import InputError
    from alexnet_deploy.evaluate import evaluate

    _image_folder(tmp_path / "val", 2)
    flat = tmp_path / "flat"
    write_images(flat, 2)
    bad = tmp_path / "bad"
    for name in CLASSES:
        (bad / name).mkdir(parents=True)
        (bad / name / "x.png").write_bytes(b"garbage")
    cases = [
        (dict(data=tmp_path / "val", batch=0), "--batch 0 must be at least 1"),
        (dict(data=tmp_path / "val", limit=0), "--limit 0 must be at least 1"),
        (dict(data=flat), "it has no class sub-folders"),
        (dict(data=tmp_path / "val", runtime="torch"), "is an ONNX model; the torch runtime runs checkpoints"),
        (dict(data=tmp_path / "val", runtime="tvm"), "unknown runtime 'tvm'"),
        (dict(data=bad), "none of the 3 image files"),
    ]
    for kwargs, needle in cases:
        with pytest.raises(InputError) as caught:
            evaluate(model, **kwargs)
        assert needle in caught.value.problem, kwargs
    from types import SimpleNamespace

    with pytest.raises(InputError, match="apply to checkpoints"):
        evaluate(model, tmp_path / "val", preprocessing=SimpleNamespace(resize=None, crop=12, mean=None, std=None))


def _meta_state_dict(layout: str, classes: int = 10) -> dict:
    """The state_dict of the seed class for ``layout`` (shapes only, on the meta device)."""
    import torch

    from seed_models import SEED_CLASSES

    factory, _ = SEED_CLASSES[layout]
    with torch.device("meta"):
        return factory(classes).state_dict()


def test_every_seed_layout_is_detected_with_its_class_count():
    from alexnet_deploy.checkpoints.layouts import detect_layout

    for layout in ("torchvision", "paper-lrn", "paper-hand-lrn", "layers-fc", "half-width"):
        for classes in (3, 10):
            found = detect_layout(_meta_state_dict(layout, classes))
            assert (found.layout.name, found.num_classes, found.exact) == (layout, classes, True)
            assert (found.missing, found.unexpected, found.mismatched, found.score, found.diff()) == ([], [], [], 0, "")


def test_layouts_with_the_same_shapes_are_refused_naming_both():
    from alexnet_deploy.checkpoints.layouts import detect_layout
    from alexnet_deploy.errors import LayoutError

    state = _meta_state_dict("caffe-227")  # seed 000's shapes are paper-224's too
    with pytest.raises(LayoutError) as caught:
        detect_layout(state)
    problem, fix = caught.value.problem, caught.value.fix
    assert "fits 2 layouts with identical weight shapes" in problem
    assert "caffe-227 (96 ch, pad 0, 227x227 input, seed 000, Imagenette tutorial)" in problem and "paper-224 (96 ch, pad 2, 224x224 input" in problem
    assert fix.startswith("pass --arch caffe-227 or --arch paper-224 (")
    assert "caffe-227 if the first Conv2d has padding=0 and images are cropped to 227" in fix and "paper-224 if the first Conv2d has padding=2" in fix
    assert detect_layout(state, arch="caffe-227").layout.name == "caffe-227"
    assert detect_layout(state, arch="paper-224").layout.name == "paper-224"


def test_a_checkpoint_sharing_half_its_keys_with_a_layout_is_called_close_and_every_refusal_says_what_to_do():
    """Half of the checkpoint's keys (rounded down) in a layout: "closest to layout", with the difference; fewer: "not an AlexNet layout"."""
    from alexnet_deploy.checkpoints.layouts import detect_layout
    from alexnet_deploy.errors import LayoutError

    state = _meta_state_dict("torchvision")
    keys = list(state)
    check = "check that this is the right checkpoint, or pass --model FILE.py:ClassName with the class it was trained with"

    def refusal(kept: int, foreign: int) -> LayoutError:
        mixed = {k: state[k] for k in keys[:kept]} | {f"head.{i}.weight": state[keys[0]] for i in range(foreign)}
        with pytest.raises(LayoutError) as caught:
            detect_layout(mixed)
        return caught.value

    for kept, foreign in ((8, 8), (8, 9)):  # 8 of 16 keys, 8 of 17 (17 // 2 == 8): close enough to name the layout
        close = refusal(kept, foreign)
        assert close.problem.startswith("checkpoint is closest to layout torchvision but does not fit it: missing features.10.weight"), (kept, foreign)
        assert close.fix == check
    far = refusal(7, 9)  # 7 of 16: under half
    assert far.problem.startswith("checkpoint is not one of the built-in AlexNet layouts (its keys start features.0.weight")
    assert far.fix == "pass --model FILE.py:ClassName with the class it was trained with"
    with pytest.raises(LayoutError) as caught:
        detect_layout(_meta_state_dict("half-width"), arch="torchvision")
    assert caught.value.fix == check


def test_a_checkpoint_that_does_not_fit_is_refused_with_the_difference():
    from alexnet_deploy.checkpoints.layouts import detect_layout, format_diff
    from alexnet_deploy.errors import LayoutError

    state = _meta_state_dict("half-width")
    with pytest.raises(LayoutError) as caught:
        detect_layout(state, arch="torchvision")
    assert caught.value.problem.startswith("checkpoint does not fit --arch torchvision: ")
    assert "features.0.weight has shape [48, 3, 11, 11], torchvision needs [64, 3, 11, 11]" in caught.value.problem
    with pytest.raises(LayoutError, match="unknown --arch 'vgg'"):
        detect_layout(state, arch="vgg")
    near = dict(state)
    del near["classifier.4.bias"]
    near["extra.weight"] = state["classifier.4.weight"]
    with pytest.raises(LayoutError) as caught:
        detect_layout(near)
    assert caught.value.problem == "checkpoint is closest to layout half-width but does not fit it: missing classifier.4.bias; unexpected extra.weight."
    other = {f"backbone.{i}.weight": state["features.0.weight"] for i in range(6)}
    with pytest.raises(LayoutError) as caught:
        detect_layout(other)
    assert "is not one of the built-in AlexNet layouts (its keys start backbone.0.weight, backbone.1.weight, backbone.2.weight, backbone.3.weight)" in caught.value.problem
    assert "--model FILE.py:ClassName" in caught.value.fix
    # format_diff truncates every list at the limit
    text = format_diff(list("abcde"), list("vwxyz"), [(k, (1,), (2,)) for k in "pqrst"], "L", limit=4)
    assert text == ("missing a, b, c, d ...; unexpected v, w, x, y ...; p has shape [1], L needs [2]; q has shape [1], L needs [2]; "
                    "r has shape [1], L needs [2]; s has shape [1], L needs [2]; ... 1 more mis-shaped")
    assert format_diff(["a"], [], [], "L") == "missing a"
    assert format_diff(list("abcde"), [], [], "L") == "missing a, b, c, d ..."  # the default limit is 4
    exactly = format_diff(list("abcd"), list("wxyz"), [(k, (1,), (2,)) for k in "pqrs"], "L", limit=4)  # at the limit: nothing left out
    assert " ..." not in exactly and "more mis-shaped" not in exactly and exactly.count("L needs") == 4


def test_parse_batches_and_bench_input_kinds(tmp_path, model):
    from alexnet_deploy.bench.runner import input_kind, parse_batches
    from alexnet_deploy.errors import InputError

    assert parse_batches("1,8,32") == [1, 8, 32] and parse_batches("8,1,8") == [8, 1]
    with pytest.raises(InputError) as caught:
        parse_batches("8,0")
    assert (caught.value.problem, caught.value.fix) == ("--batch '8,0' is not a list of positive integers.", "e.g. --batch 1,8,32")
    assert input_kind(model) == "onnx"
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with pytest.raises(InputError, match="is not a checkpoint, an ONNX model or a TensorRT engine"):
        input_kind(other)


def test_run_bench_on_a_real_onnx_file(model, monkeypatch):
    """onnxruntime rows for each batch, the speedup against the first row of a batch, and a checkpoint runtime left out."""
    from alexnet_deploy.bench import runner
    from alexnet_deploy.bench.harness import TimingSettings
    from alexnet_deploy.bench.runner import run_bench
    from alexnet_deploy.errors import InputError

    # the host description (GEMM ceilings take seconds to measure) is not what this test is about
    monkeypatch.setattr(runner, "machine_info", lambda threads, measure_ceilings=True: {"threads": threads})

    report = run_bench([model, model], ["ort", "torch"], [1, 3], TimingSettings(warmup_s=0.0, iterations=2))
    assert [(r["runtime"], r["batch"], r["precision"], r["device"], r["iterations"]) for r in report.results] == [("ort", 1, "fp32", "cpu", 2), ("ort", 3, "fp32", "cpu", 2)]
    for row in report.results:
        assert row["speedup"] == 1.0 and row["baseline"] == "ort tiny.onnx" and row["model"] == str(Path(model).resolve())
        assert row["throughput_ips"] == pytest.approx(row["batch"] * 1000 / row["latency_ms"]["mean"])
    assert report.skipped == []  # torch takes checkpoints only: nothing to skip per input, the plan leaves it out
    assert [f["batch"] for f in report.fastest] == [1, 3] and all(f["speedup_vs_ort_fp32"] == 1.0 for f in report.fastest)
    assert report.settings["batches"] == [1, 3] and report.settings["iterations"] == 2
    with pytest.raises(InputError) as caught:
        run_bench([model], ["torch"], [1], TimingSettings(warmup_s=0.0, iterations=1))
    assert "no requested runtime takes a onnx (use ort, ort-cuda, ort-trt, openvino, openvino-bf16, trt)" in caught.value.problem
    with pytest.raises(InputError, match="unknown runtime tvm"):
        run_bench([model], ["tvm"], [1])


def test_predict_sources_mix_files_and_folders_each_file_once_and_every_left_out_entry(model, tmp_path):
    """A file named directly, two folders (each with a link out of it), the file again inside a folder:
    each image once in the order first named, and what both listings left out."""
    from alexnet_deploy.errors import InputError
    from alexnet_deploy.predict import image_files, predict_files

    outside = write_images(tmp_path / "outside", 1)[0]
    first = write_images(tmp_path / "one", 2)
    second = write_images(tmp_path / "two", 2, seed=5)
    (tmp_path / "one" / "zlink.png").symlink_to(outside)
    (tmp_path / "two" / "zlink.png").symlink_to(outside)
    files, excluded = image_files([second[1], tmp_path / "one", tmp_path / "two"])
    assert files == [second[1], *first, second[0]]
    assert [e["image"] for e in excluded] == [str(tmp_path / "one" / "zlink.png"), str(tmp_path / "two" / "zlink.png")]
    result = predict_files(model, [second[1], tmp_path / "one", tmp_path / "two"], topk=2)
    assert [p["image"] for p in result["predictions"]] == [str(p) for p in files] and result["images"] == 4
    assert [s["image"] for s in result["skipped"]] == [e["image"] for e in excluded]
    with pytest.raises(InputError) as caught:
        image_files([tmp_path / "missing.png"])
    assert (caught.value.problem, caught.value.fix) == (f"image {tmp_path / 'missing.png'} does not exist.", "check the path")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image files found in the given folders"):
        image_files([tmp_path / "empty"])


def test_predict_with_no_image_found_names_what_the_listings_left_out(tmp_path):
    """No image in the folders given: the refusal counts the entries left out and names the first one
    with its reason (the reasons are scan_images' documented texts, spelled out here); with nothing
    left out, the message ends at "folders." and the fix still names the image types."""
    from alexnet_deploy.errors import InputError
    from alexnet_deploy.predict import image_files

    outside = write_images(tmp_path / "outside", 1)[0]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "zlink.png").symlink_to(outside)
    (tmp_path / "b" / "dirlink").symlink_to(tmp_path / "outside", target_is_directory=True)
    fix = "give .jpg/.png files or folders that hold them"
    with pytest.raises(InputError) as caught:
        image_files([tmp_path / "a", tmp_path / "b"])
    first = tmp_path / "a" / "zlink.png"
    expected = (f"no image files found in the given folders (2 entries left out, e.g. {first}: "
                "a link to a file outside the folder (not followed; --follow-links to follow it)).")
    assert (caught.value.problem, caught.value.fix) == (expected, fix)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError) as caught:
        image_files([tmp_path / "empty"])
    assert (caught.value.problem, caught.value.fix) == ("no image files found in the given folders.", fix)


# ---------------------------------------------------------------------------------------------
# quantize's image plan: the shares, the draws and the precisions that calibrate nothing


def test_quantize_keeps_one_image_back_from_a_folder_of_six(model, tmp_path):
    """6 images <= --calib-samples, no --holdout: a fifth of 6, rounded down but at least one, is kept back."""
    from alexnet_deploy.quantize.pipeline import plan_images

    files = _image_folder(tmp_path / "six", 2)  # 3 classes x 2
    calibration, compared, notes = plan_images("int8", tmp_path / "six", None, 256, 500, _record(model))
    assert (len(calibration.images.paths), len(compared.used.paths)) == (5, 1)
    assert set(calibration.images.paths) | set(compared.used.paths) == set(files) and notes == []


def test_quantize_with_holdout_calibrates_on_a_seeded_draw_and_compares_on_the_holdout(model, tmp_path):
    """21 calibration images, --calib-samples 5, a --holdout folder: 5 calibration images drawn at random
    but the same ones every run (1 in 20349 that two unseeded draws agree), every held-out image compared."""
    from alexnet_deploy.quantize.pipeline import plan_images

    files = _image_folder(tmp_path / "calib", 7)
    held = _image_folder(tmp_path / "held", 1, seed=50)
    runs = [plan_images("int8", tmp_path / "calib", tmp_path / "held", 5, 500, _record(model)) for _ in range(2)]
    (calibration, compared, notes), (again, _, _) = runs
    paths = list(calibration.images.paths)
    assert len(paths) == 5 and set(paths) <= set(files) and paths != files[:5]
    assert list(again.images.paths) == paths
    assert list(compared.used.paths) == held and notes == []


def test_quantize_without_int8_calibrates_nothing_and_compares_on_the_folders_given(model, tmp_path):
    """fp16 (nothing to calibrate): --holdout is compared on when given, else the --calib folder; a --calib
    that is not used is reported; with no folder at all, 64 synthetic images, the same every run."""
    from alexnet_deploy.quantize.pipeline import SYNTHETIC_HOLDOUT, plan_images

    calib = _image_folder(tmp_path / "calib", 1)
    held = _image_folder(tmp_path / "held", 1, seed=50)
    record = _record(model)
    calibration, compared, notes = plan_images("fp16", tmp_path / "calib", tmp_path / "held", 256, 500, record)
    assert calibration is None and list(compared.used.paths) == held
    assert notes == [f"fp16 needs no calibration; --calib {tmp_path / 'calib'} was ignored"]
    calibration, compared, notes = plan_images("fp16", tmp_path / "calib", None, 256, 500, record)
    assert calibration is None and list(compared.used.paths) == calib and notes == []
    synthetic_note = "no images given: compared on synthetic images, so agreement says little about real accuracy; add --holdout DIR"
    calibration, compared, notes = plan_images("fp16", None, None, 256, 500, record)
    assert calibration is None and notes == [synthetic_note]
    assert compared.batch.shape[0] == SYNTHETIC_HOLDOUT and compared.used is None
    _, again, notes = plan_images("fp16", "synthetic", None, 256, 500, record)
    assert notes == ["fp16 needs no calibration; --calib synthetic was ignored", synthetic_note]
    np.testing.assert_array_equal(again.batch, compared.batch)  # seeded: the same images every run


def test_quantize_follow_links_lists_linked_images_in_both_folders(model, tmp_path):
    """--follow-links reaches both folders' listings: an image linked into each is used."""
    from alexnet_deploy.quantize.pipeline import plan_images

    outside = write_images(tmp_path / "outside", 2)
    calib = _image_folder(tmp_path / "calib", 1)
    held = _image_folder(tmp_path / "held", 1, seed=50)
    (tmp_path / "calib" / CLASSES[0] / "zlink.png").symlink_to(outside[0])
    (tmp_path / "held" / CLASSES[0] / "zlink.png").symlink_to(outside[1])
    calibration, compared, _ = plan_images("int8", tmp_path / "calib", tmp_path / "held", 256, 500, _record(model), follow_links=True)
    assert tmp_path / "calib" / CLASSES[0] / "zlink.png" in calibration.images.paths and len(calibration.images.paths) == len(calib) + 1
    assert tmp_path / "held" / CLASSES[0] / "zlink.png" in compared.used.paths and len(compared.used.paths) == len(held) + 1
    calibration, compared, _ = plan_images("int8", tmp_path / "calib", tmp_path / "held", 256, 500, _record(model))
    assert list(calibration.images.paths) == calib and list(compared.used.paths) == held


# ---------------------------------------------------------------------------------------------
# predict: --topk 1 and --batch 1 are valid, --batch sets the chunk, refusals before any model work


def test_predict_topk_one_batch_sizes_and_early_refusals(model, tmp_path):
    from alexnet_deploy.errors import InputError
    from alexnet_deploy.predict import predict_files
    from alexnet_deploy.progress import Progress

    class Chunks(Progress):
        def __init__(self):
            self.advances = []

        def advance(self, units=1):
            self.advances.append(units)

    files = write_images(tmp_path / "images", 5)
    (tmp_path / "images" / "zbad.png").write_bytes(b"not an image")  # listed last, skipped when decoded
    chunks, seen = Chunks(), []
    started = time.perf_counter()
    result = predict_files(model, [tmp_path / "images"], topk=1, batch=2, progress=chunks, on_prediction=seen.append)
    elapsed = time.perf_counter() - started
    assert sorted(result) == ["format", "images", "images_per_s", "model", "output", "precision", "predictions", "runtime", "seconds", "skipped"]
    assert (result["model"], result["runtime"], result["precision"], result["images"]) == (str(model), "ort", "fp32", 5)
    assert 0 < result["seconds"] <= elapsed and result["images_per_s"] == pytest.approx(5 / result["seconds"])
    assert [s["image"] for s in result["skipped"]] == [str(tmp_path / "images" / "zbad.png")]
    assert [len(p["top"]) for p in result["predictions"]] == [1] * 5
    assert [item["image"] for item in seen] == [str(path) for path in sorted(files)]  # each labelled image, as it is known
    assert (result["output"], result["format"]) == (None, None)
    assert chunks.advances == [2, 2, 2]  # 6 files in chunks of --batch 2, the undecodable one counted too
    chunks = Chunks()
    assert predict_files(model, [tmp_path / "images"], batch=1, progress=chunks)["images"] == 5 and chunks.advances == [1] * 6
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "bad.png").write_bytes(b"not an image")
    with pytest.raises(InputError) as caught:
        predict_files(model, [tmp_path / "bad"])
    assert (caught.value.problem, caught.value.fix) == ("none of the 1 image file(s) could be decoded.", "give readable .jpg/.png images")
    for kwargs, expected in [
        ({"topk": 0}, ("--topk 0 must be at least 1.", "e.g. --topk 5")),
        ({"batch": 0}, ("--batch 0 must be at least 1.", "e.g. --batch 32")),
        ({"output": tmp_path / "missing" / "p.jsonl"},
         (f"predictions file directory {tmp_path / 'missing'} does not exist.", f"create it first: mkdir -p {tmp_path / 'missing'}")),
    ]:
        with pytest.raises(InputError) as caught:
            predict_files(tmp_path / "no-model.onnx", [tmp_path / "images"], **kwargs)  # refused before the model is opened
        assert (caught.value.problem, caught.value.fix) == expected


def test_predict_passes_threads_and_runtime_to_the_session_and_keeps_five_labels_by_default(model, six_class_model, tmp_path, monkeypatch):
    """--threads reaches onnxruntime's session options (read off the options onnxruntime was given),
    --runtime openvino opens no onnxruntime session, and the default is the top 5 of 6 classes."""
    import onnxruntime

    from alexnet_deploy.predict import predict_files

    sessions = []

    class Recording(onnxruntime.InferenceSession):
        def __init__(self, path, options=None, *args, **kwargs):
            sessions.append(options.intra_op_num_threads if options is not None else None)
            super().__init__(path, options, *args, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", Recording)
    write_images(tmp_path / "images", 2)
    predict_files(model, [tmp_path / "images"], threads=1)
    assert sessions == [1]
    predict_files(model, [tmp_path / "images"], runtime="openvino")
    assert sessions == [1]  # OpenVINO ran it: no onnxruntime session
    result = predict_files(six_class_model, [tmp_path / "images"])
    assert [len(p["top"]) for p in result["predictions"]] == [5, 5]


# ---------------------------------------------------------------------------------------------
# evaluate(): its defaults, refusals, progress, what it passes on, and the report's own arithmetic


class _Recorder(Progress):
    """A progress receiver that keeps every call."""

    def __init__(self):
        self.messages, self.starts, self.advanced = [], [], 0

    def __call__(self, message):
        self.messages.append(message)

    def start(self, description, total):
        self.starts.append((description, total))

    def advance(self, units=1):
        self.advanced += units


def test_evaluate_defaults_progress_and_what_it_passes_to_the_runtime_and_the_stream(model, tmp_path, monkeypatch):
    import alexnet_deploy.evaluate as ev
    import alexnet_deploy.runtimes as runtimes
    from alexnet_deploy.evaluate import evaluate

    files = _image_folder(tmp_path / "data", 5)
    (tmp_path / "data" / CLASSES[0] / "a-broken.png").write_bytes(b"not an image")  # first in its class: a skipped file
    opened, streams, chunks = [], [], []
    real_open, real_stream = runtimes.open_runtime, ev.ImageStream

    def open_runtime(path, name, threads):
        opened.append((name, threads))
        runtime = real_open(path, name, threads)
        real_run_all = runtime.run_all

        def run_all(data, batch_size=32, advance=None):
            chunks.append((len(data), batch_size))
            time.sleep(0.05)  # a known lower bound on the model's own time
            return real_run_all(data, batch_size, advance)

        runtime.run_all = run_all
        return runtime

    monkeypatch.setattr(runtimes, "open_runtime", open_runtime)
    monkeypatch.setattr(ev, "ImageStream", lambda *a, **k: streams.append(k) or real_stream(*a, **k))
    progress = _Recorder()
    tick = time.perf_counter()
    report = evaluate(model, tmp_path / "data", batch=4, threads=3, workers=2, progress=progress)
    wall = time.perf_counter() - tick
    n = len(files)
    assert opened == [("ort", 3)] and streams == [{"batch": 4, "workers": 2}] and all(size == 4 for _, size in chunks)
    assert report.n == n and report.batch == 4 and report.model == str(model) and report.skipped == [str(tmp_path / "data" / CLASSES[0] / "a-broken.png")]
    assert progress.messages[0] == "loading the model" and progress.starts == [(f"evaluating {n + 1} images", n + 1)] and progress.advanced == n + 1
    assert all(type(v) is int for row in report.confusion for v in row)  # counts, not floats, in the JSON
    assert not hasattr(report, "predictions")  # keep_predictions is off by default
    # The speeds are the report's own clocks: the model's time is at least the sleeps and at most the whole run.
    model_time = len(chunks) * 0.05
    assert n / wall <= report.images_per_s <= report.model_images_per_s <= n / model_time
    default = evaluate(model, tmp_path / "data")
    assert default.batch == 32 and streams[-1] == {"batch": 32, "workers": None} and opened[-1] == ("ort", None)


def test_evaluate_scores_past_a_chunk_in_which_nothing_decodes(model, tmp_path):
    from alexnet_deploy.evaluate import evaluate

    files = _image_folder(tmp_path / "data", 3)
    for name in ("a0.png", "a1.png"):  # sorted first: the whole first chunk of 2 is undecodable
        (tmp_path / "data" / CLASSES[0] / name).write_bytes(b"broken")
    report = evaluate(model, tmp_path / "data", batch=2)
    assert report.n == len(files) and len(report.skipped) == 2


def test_evaluate_refusals_name_the_problem_and_the_fix(model, tmp_path):
    from alexnet_deploy.errors import InputError
    from alexnet_deploy.evaluate import evaluate

    _image_folder(tmp_path / "data", 1)

    def refusal(**kwargs):
        with pytest.raises(InputError) as caught:
            evaluate(model, kwargs.pop("data", tmp_path / "data"), **kwargs)
        return caught.value.problem, caught.value.fix

    assert refusal(batch=0) == ("--batch 0 must be at least 1.", "e.g. --batch 32")
    assert refusal(limit=0) == ("--limit 0 must be at least 1.", "drop it to use every image")
    assert evaluate(model, tmp_path / "data", batch=1, limit=1).n == 1  # 1 is allowed for both
    missing = tmp_path / "missing"
    assert refusal(data=missing) == (f"data folder {missing} does not exist.", "check the path")
    empty = tmp_path / "empty"
    write_images(empty, 2)  # images beside an empty class folder: folders, but none with images
    (empty / "cat").mkdir()
    fix = "give an ImageFolder root: one sub-folder of images per class, named by the model's labels"
    assert refusal(data=empty) == (f"{empty} is not an ImageFolder (its class sub-folders hold no images), so there is nothing to score against.", fix)
    flat = tmp_path / "flat"
    write_images(flat, 2)
    assert refusal(data=flat) == (f"{flat} is not an ImageFolder (it has no class sub-folders), so there is nothing to score against.", fix)
    broken = tmp_path / "broken"
    (broken / CLASSES[0]).mkdir(parents=True)
    (broken / CLASSES[0] / "x.png").write_bytes(b"broken")
    assert refusal(data=broken) == (f"none of the 1 image files under {broken} could be decoded.", "point --data at a folder of readable images")


def test_evaluate_follows_links_out_of_the_folder_only_when_asked(model, tmp_path):
    from alexnet_deploy.evaluate import evaluate

    files = _image_folder(tmp_path / "data", 2)
    outside = write_images(tmp_path / "elsewhere", 1)[0]
    (tmp_path / "data" / CLASSES[0] / ("linked" + outside.suffix)).symlink_to(outside)
    kept = evaluate(model, tmp_path / "data")
    assert kept.n == len(files) and [e["path"] for e in kept.excluded] == [str(tmp_path / "data" / CLASSES[0] / ("linked" + outside.suffix))]
    followed = evaluate(model, tmp_path / "data", follow_links=True)
    assert followed.n == len(files) + 1 and followed.excluded == []


def test_summarize_speeds_at_zero_time_and_without_the_models_own_time():
    from alexnet_deploy.evaluate import summarize

    confusion = np.array([[3, 1], [0, 2]])
    args = dict(name="m", runtime="ort", precision="fp32", labels=["a", "b"], confusion=confusion, top5_hits=np.array([4, 2]),
                mapping={0: 0, 1: 1}, matched="by name", skipped=[], batch=8, root=Path("r"), files=6)
    zero = summarize(**args, total_seconds=0.0, model_seconds=0.0)
    assert (zero.images_per_s, zero.model_images_per_s) == (0.0, 0.0)
    ray = summarize(**args, total_seconds=2.0, model_seconds=None)  # eval --ray: no model time of its own
    assert (ray.images_per_s, ray.model_images_per_s) == (3.0, None) and ray.notes == []
    renamed = summarize(**{**args, "matched": "by position"}, total_seconds=1.0, model_seconds=0.5)
    assert renamed.notes == ["folder classes matched to the model by position"] and renamed.model_images_per_s == 12.0


def _quantize_inputs(model: Path, tmp_path: Path) -> Path:
    """A copy of the tiny model to quantize, with ``calib/`` (4 images a class) and ``val/`` (3 a class, other seeds) beside it."""
    import shutil

    source = tmp_path / "tiny.onnx"
    shutil.copy(model, source)
    _image_folder(tmp_path / "calib", 4)
    _image_folder(tmp_path / "val", 3, seed=50)
    return source


# ---------------------------------------------------------------------------------------------
# quantize_model(): defaults, the budget's and --holdout-samples' limits, the default output, accuracy on labelled images


def test_quantize_model_defaults_limits_default_output_and_accuracy(model, tmp_path):
    from alexnet_deploy.errors import InputError
    from alexnet_deploy.evaluate import evaluate
    from alexnet_deploy.quantize.pipeline import quantize_model

    source = _quantize_inputs(model, tmp_path)
    outside = write_images(tmp_path / "elsewhere", 1)[0]
    (tmp_path / "val" / CLASSES[0] / ("linked" + outside.suffix)).symlink_to(outside)  # not followed by default
    outcome = quantize_model(source, "int8", calib=tmp_path / "calib", holdout=tmp_path / "val", budget=Budget(max_drop=100.0))
    # The defaults: written beside the source with the precision in its name, searched, latency measured.
    assert outcome.output == tmp_path / "tiny.int8.onnx" and outcome.output.is_file() and outcome.written
    assert outcome.search is not None and outcome.search["log"] and outcome.latency
    assert quantize_model(source, "int8", calib=tmp_path / "calib", holdout=tmp_path / "val", output=tmp_path / "x.onnx",
                          budget=Budget(max_drop=100.0), measure_latency=False).latency == {}
    # Accuracy on the labelled held-out folder: FP32's is what `eval` scores on the same images.
    comparison = outcome.comparison
    assert comparison["images"] == 9 and comparison["accuracy_fp32"] == pytest.approx(evaluate(source, tmp_path / "val").top1)
    assert comparison["accuracy"] is not None and comparison["budget_verdict"] in ("within", "uncertain")  # a drop of 100 points is allowed
    assert outcome.search["log"][0]["accuracy"] is not None  # the search itself scored accuracy on the labels

    def refusal(**kwargs):
        with pytest.raises(InputError) as caught:
            quantize_model(source, "int8", calib=tmp_path / "calib", holdout=tmp_path / "val", **{"output": tmp_path / "r.onnx", "measure_latency": False, **kwargs})
        assert not (tmp_path / "r.onnx").exists()
        return caught.value.problem, caught.value.fix

    limits = ("--max-drop must be >= 0 points and --min-agreement between 0 and 100 (%).", "e.g. --max-drop 1.0 or --min-agreement 99")
    assert refusal(budget=Budget(max_drop=-0.5)) == limits
    assert refusal(budget=Budget(min_agreement=100.5)) == limits
    assert refusal(budget=Budget(min_agreement=-1)) == limits
    assert refusal(holdout_samples=0) == ("--holdout-samples 0 must be at least 1.", "e.g. --holdout-samples 500")
    assert refusal(method="bogus") == ("unknown calibration method 'bogus'.", "use --method minmax|entropy|percentile")
    assert refusal(calib_samples=0) == ("--calib-samples 0 must be at least 1.", "e.g. --calib-samples 256")
    assert refusal(output=tmp_path / "r.txt") == (f"output {tmp_path / 'r.txt'} does not end in .onnx.", "name the output file *.onnx")
    assert refusal(output=source) == ("the output would overwrite the FP32 source.", "choose another -o path")
    assert source.read_bytes() == model.read_bytes()
    # The limits themselves are allowed: no drop at all, 100% agreement, one comparison image.
    edge = quantize_model(source, "int8", calib=tmp_path / "calib", holdout=tmp_path / "val", output=tmp_path / "edge.onnx",
                          budget=Budget(max_drop=0.0, min_agreement=100.0), holdout_samples=1, measure_latency=False, allow_drop=True)
    assert edge.comparison["images"] == 1


def test_evaluate_refuses_a_model_whose_input_differs_from_its_preprocessings_crop(model, tmp_path, monkeypatch):
    """A checkpoint given a --crop that is not its --input-size reaches this check; an ONNX file's
    record is checked against its graph earlier, so the crop is changed on the loaded model here."""
    import dataclasses

    import alexnet_deploy.evaluate as ev
    from alexnet_deploy.errors import InputError
    from tiny_model import SIZE

    _image_folder(tmp_path / "data", 1)
    real_load = ev._load

    def load(*args):
        loaded = real_load(*args)
        return dataclasses.replace(loaded, preprocessing=dataclasses.replace(loaded.preprocessing, crop=SIZE + 4))

    monkeypatch.setattr(ev, "_load", load)
    with pytest.raises(InputError) as caught:
        ev.evaluate(model, tmp_path / "data")
    assert (caught.value.problem, caught.value.fix) == (
        f"the model takes {SIZE}x{SIZE} input but its preprocessing crops to {SIZE + 4}.", "pass --crop/--input-size matching the model")


class _Unmeetable(Budget):
    """A budget no candidate meets (the real Budget's limits and text, ``holds`` always False): the search tries
    every point it has, and the result is outside the budget however the tiny model quantizes."""

    def holds(self, measured):
        return False


def test_quantize_model_outside_the_budget_writes_nothing_unless_allowed_and_keeps_every_point(model, tmp_path):
    import onnx

    from alexnet_deploy.quantize.pipeline import quantize_model
    from alexnet_deploy.quantize.recipes import METHODS
    from alexnet_deploy.record import read_record

    source = _quantize_inputs(model, tmp_path)
    common = dict(calib=tmp_path / "calib", holdout=tmp_path / "val", budget=_Unmeetable())
    refused = quantize_model(source, "int8", output=tmp_path / "no.onnx", **common)
    assert not refused.written and not (tmp_path / "no.onnx").exists() and refused.latency == {}  # not timed: nothing to ship
    assert "no recipe met the budget (top-1 drop <= 1 points); nothing was written" in refused.warnings and refused.search["met"] is False
    tried = refused.search["log"]
    assert {step["method"] for step in tried if step.get("graph") == "original"} == set(METHODS)  # the default searches every method
    trail_text = (tmp_path / "no.onnx.search.json").read_text()  # the documented name: OUTPUT.search.json
    trail = json.loads(trail_text)
    assert trail_text.startswith('{\n "budget": {') and set(trail) == {"budget", "best", "log"}  # one-space indent, as documented
    assert trail["budget"]["kind"] == "accuracy" and trail["budget"]["text"] == "top-1 drop <= 1 points" and len(trail["log"]) == len(tried)
    assert trail["best"] is not None and trail["best"]["step"] in [step["step"] for step in tried]

    one = quantize_model(source, "int8", output=tmp_path / "one.onnx", search=False, measure_latency=False, **common)
    assert len(one.search["log"]) == 1 and one.search["log"][0]["method"] == "minmax" and one.search["recipe"]["searched"] is False

    kept = quantize_model(source, "int8", output=tmp_path / "kept.onnx", allow_drop=True, **common)
    assert kept.written and "no recipe met the budget (top-1 drop <= 1 points); written anyway (--allow-drop)" in kept.warnings
    assert set(kept.latency) and kept.search["met"] is False
    # The file carries what was measured: read back from disk, not from the outcome object alone.
    record = read_record(onnx.load(tmp_path / "kept.onnx"), "kept")
    quantization = record.details["quantization"]
    assert record.precision == "int8" and quantization["precision"] == "int8" and quantization["target"] == "cpu"
    assert quantization["measured"]["images"] == 9 and quantization["measured"]["latency"] == json.loads(json.dumps(kept.latency))
    assert quantization["measured"]["accuracy"] == pytest.approx(kept.comparison["accuracy"]) and quantization["search"]["searched"] is True
    assert quantization["calibration"]["method"] == kept.search["recipe"]["method"]
    size = (tmp_path / "kept.onnx").stat().st_size
    assert kept.sizes == {"fp32_bytes": source.stat().st_size, "bytes": size, "ratio": pytest.approx(size / source.stat().st_size)}
    assert (kept.output, kept.source, kept.precision, kept.target) == (tmp_path / "kept.onnx", source, "int8", "cpu") and kept.recipe


def test_quantize_model_fp16_and_unlabelled_int8_compare_on_synthetic_images(model, tmp_path):
    import shutil

    import onnx

    from alexnet_deploy.quantize.pipeline import quantize_model, search_trail
    from alexnet_deploy.record import read_record

    source = tmp_path / "tiny.onnx"
    shutil.copy(model, source)
    progress = _Recorder()
    # Without --holdout the comparison set is 64 synthetic images (the result says so).
    half = quantize_model(source, "fp16", progress=progress)
    assert half.output == tmp_path / "tiny.fp16.onnx" and half.written and half.search is None and half.calibration is None
    assert read_record(onnx.load(half.output), "half").precision == "fp16" and "search" not in read_record(onnx.load(half.output), "half").details["quantization"]
    assert half.comparison["on"] == "64 synthetic comparison images" and any(w.startswith("no images given: compared on synthetic images") for w in half.warnings)
    assert half.comparison["images"] == 64 and half.comparison["accuracy"] is None and "budget_verdict" not in half.comparison
    assert set(half.latency) and "measuring latency" in progress.messages and f"writing {half.output}" in progress.messages  # measured by default
    assert half.comparison["skipped"] == 0 and half.comparison["max_rel_err"] >= 0 and half.comparison["min_cosine"] > 0.99
    dynamic = quantize_model(source, "int8-dynamic", measure_latency=False)  # onnxruntime's dynamic recipe: integer ops, weights only
    ops = {node.op_type for node in onnx.load(dynamic.output).graph.node}
    assert dynamic.output == tmp_path / "tiny.int8-dynamic.onnx" and ops & {"ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"}
    # FP32 and FP16 both run on the comparison images (nothing ran FP32 before): twice the images of progress.
    assert ("comparing with FP32 on 64 images", 128) in progress.starts and progress.advanced >= 128
    assert not any("synthetic" in w and "calibrated" in w for w in half.warnings)  # FP16 calibrates nothing

    progress = _Recorder()
    unlabelled = quantize_model(source, "int8", calib="synthetic", measure_latency=False, progress=progress)
    assert "calibrated on synthetic images: accuracy on real images is unknown; calibrate on real images with --calib DIR" in unlabelled.warnings
    assert unlabelled.calibration["source"] == "synthetic" and "measured" not in unlabelled.search["recipe"]
    assert unlabelled.comparison["accuracy"] is None and "budget_verdict" not in unlabelled.comparison
    assert unlabelled.search["budget"]["kind"] == "agreement" and json.loads(search_trail(unlabelled.output).read_text())["budget"]["kind"] == "agreement"
    # FP32 ran once, before the search; the comparison reuses those logits: one pass of progress over the images.
    assert ("running FP32 on 64 held-out images", 64) in progress.starts and ("comparing with FP32 on 64 images", 64) in progress.starts


def test_quantize_model_interrupted_while_timing_keeps_the_chosen_file_and_says_so(model, tmp_path, monkeypatch):
    import onnx

    import alexnet_deploy.quantize.pipeline as pipeline
    from alexnet_deploy.record import read_record

    source = _quantize_inputs(model, tmp_path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "latency_comparison", interrupted)
    output = tmp_path / "int8.onnx"
    with pytest.raises(KeyboardInterrupt) as caught:  # caught as its base class: a plain one would stop pytest itself
        pipeline.quantize_model(source, "int8", output=output, calib=tmp_path / "calib", holdout=tmp_path / "val", budget=Budget(max_drop=100.0))
    assert type(caught.value) is pipeline.QuantizeInterrupted
    trail = json.loads(pipeline.search_trail(output).read_text())
    assert caught.value.written == output and output.is_file() and caught.value.step == trail["written_step"] == 1 and caught.value.steps == 1
    assert trail["interrupted"] is True and trail["search_finished"] is True and trail["written"] == str(output) and len(trail["log"]) == 1
    assert caught.value.what_was_left.startswith("interrupted after 1 step(s) of the INT8 search (it had finished); the best file within the budget")
    measured = read_record(onnx.load(output), "kept").details["quantization"]["measured"]
    assert measured["images"] == 9 and measured["latency"] == {} and measured["accuracy"] is not None

    # FP16 has nothing to keep: Ctrl-C stays a plain KeyboardInterrupt and nothing is written.
    with pytest.raises(KeyboardInterrupt) as plain:
        pipeline.quantize_model(source, "fp16", output=tmp_path / "half.onnx")
    assert type(plain.value) is KeyboardInterrupt and not (tmp_path / "half.onnx").exists()


def _progress_total(progress: _Recorder) -> int:
    return sum(total for _, total in progress.starts)


def test_quantize_model_for_tensorrt_writes_symmetric_qdq_under_its_own_name_and_fills_each_progress_bar(model, tmp_path):
    import onnx
    from onnx import numpy_helper

    from alexnet_deploy.quantize.pipeline import quantize_model

    source = _quantize_inputs(model, tmp_path)
    zero_points = {}
    for target in ("cpu", "tensorrt"):
        progress = _Recorder()
        outcome = quantize_model(source, "int8", target=target, calib=tmp_path / "calib", holdout=tmp_path / "val", budget=Budget(max_drop=100.0),
                                 measure_latency=False, progress=progress)
        # Every bar reaches its total exactly: FP32 runs once (the comparison reuses the search's logits).
        assert progress.advanced == _progress_total(progress) and ("running FP32 on 9 held-out images", 9) in progress.starts
        assert ("preprocessing 9 held-out images", 9) in progress.starts  # the image plan reports to the caller's progress too
        graph = onnx.load(outcome.output).graph
        initializers = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        zero_points[target] = [initializers[n.input[2]] for n in graph.node if n.op_type == "QuantizeLinear"]
        names = outcome.output.name
        assert names == {"cpu": "tiny.int8.onnx", "tensorrt": "tiny.int8-trt.onnx"}[target]
    # TensorRT takes symmetric int8 activations (zero point 0); the CPU recipe uses uint8 activations.
    assert zero_points["tensorrt"] and all(z.dtype == np.int8 and not z.any() for z in zero_points["tensorrt"])
    assert zero_points["cpu"] and all(z.dtype == np.uint8 for z in zero_points["cpu"])
    progress = _Recorder()
    quantize_model(source, "fp16", measure_latency=False, progress=progress)
    assert progress.advanced == _progress_total(progress) == 128  # FP32 and FP16 on the 64 synthetic images


def test_quantize_model_interrupted_before_or_during_the_search_writes_nothing_and_says_why(model, tmp_path, monkeypatch):
    import alexnet_deploy.quantize.pipeline as pipeline
    import alexnet_deploy.quantize.search as search

    source = _quantize_inputs(model, tmp_path)
    output = tmp_path / "int8.onnx"
    output.write_bytes(b"a good file from before")
    trail = pipeline.search_trail(output)

    class InterruptedOnSecondCheck(Budget):
        """Ctrl-C while the search judges its second candidate; nothing is within the budget before that."""

        def holds(self, measured):
            self.calls = getattr(self, "calls", 0) + 1
            if self.calls == 2:
                raise KeyboardInterrupt
            return False

    with pytest.raises(KeyboardInterrupt) as caught:
        pipeline.quantize_model(source, "int8", output=output, calib=tmp_path / "calib", holdout=tmp_path / "val", budget=InterruptedOnSecondCheck(), allow_drop=True)
    assert type(caught.value) is pipeline.QuantizeInterrupted and caught.value.written is None and caught.value.steps == 1
    left = caught.value.what_was_left
    assert left.startswith("interrupted after 1 step(s) of the INT8 search; no candidate was within the budget yet (top-1 drop <= 1 points; best so far step 1")
    assert "(--allow-drop writes a file outside the budget only when the run completes)" in left and f"; {output} is left as it was" in left
    assert output.read_bytes() == b"a good file from before"
    record = json.loads(trail.read_text())
    assert record["interrupted"] is True and record["search_finished"] is False and record["written"] is None and record["best"]["step"] == 1

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(search, "search_int8", interrupted)
    with pytest.raises(KeyboardInterrupt) as caught:
        pipeline.quantize_model(source, "int8", output=output, calib=tmp_path / "calib", holdout=tmp_path / "val")
    assert type(caught.value) is pipeline.QuantizeInterrupted and caught.value.steps == 0
    assert caught.value.what_was_left == (f"interrupted before the INT8 search measured any candidate, so nothing was written; {output} is left as it was; "
                                         f"{trail} says so.")
    assert output.read_bytes() == b"a good file from before" and json.loads(trail.read_text())["search_finished"] is False


def test_quantize_model_refuses_a_model_already_quantized_and_warns_on_low_agreement_and_unknown_classes(model, tmp_path, monkeypatch):
    import shutil
    from dataclasses import replace

    import onnx

    import alexnet_deploy.quantize.pipeline as pipeline
    from alexnet_deploy.errors import InputError
    from alexnet_deploy.record import read_record, write_record

    source = tmp_path / "tiny.onnx"
    shutil.copy(model, source)
    half = pipeline.quantize_model(source, "fp16", measure_latency=False).output
    proto = onnx.load(source)
    write_record(proto, replace(read_record(proto, "tiny"), precision="int8"))  # a float graph whose record says int8
    onnx.save(proto, tmp_path / "said.onnx")
    for path, precision in ((half, "fp16"), (tmp_path / "said.onnx", "int8")):
        with pytest.raises(InputError) as caught:
            pipeline.quantize_model(path, "fp16", output=tmp_path / "again.onnx", measure_latency=False)
        assert (caught.value.problem, caught.value.fix) == (f"{path} is already {precision}; quantizing it again would compound the error.",
                                                            "quantize the FP32 model that `alexnet export` wrote")
    assert not (tmp_path / "again.onnx").exists()

    # The agreement warning (FP16 and dynamic INT8, not the budgeted search): below the threshold, not at it.
    agreement = "top-1 agreement with FP32 is 100.0% (< 101%): check accuracy before shipping"
    monkeypatch.setattr(pipeline, "AGREEMENT_WARNING", 1.0)
    at = pipeline.quantize_model(source, "fp16", output=tmp_path / "at.onnx", measure_latency=False)
    assert at.comparison["top1_agreement"] == 1.0 and not any("check accuracy before shipping" in w for w in at.warnings)
    monkeypatch.setattr(pipeline, "AGREEMENT_WARNING", 1.01)
    assert agreement in pipeline.quantize_model(source, "fp16", output=tmp_path / "below.onnx", measure_latency=False).warnings
    searched = pipeline.quantize_model(source, "int8", output=tmp_path / "s.onnx", calib="synthetic", measure_latency=False)
    assert searched.comparison["top1_agreement"] < 1.01 and not any("check accuracy before shipping" in w for w in searched.warnings)
    assert None not in searched.warnings

    # Held-out folders whose classes the model does not have: compared without accuracy, and the result says why.
    write_images(tmp_path / "other" / "zebra", 2)
    unknown = pipeline.quantize_model(source, "fp16", output=tmp_path / "u.onnx", holdout=tmp_path / "other", measure_latency=False)
    assert unknown.comparison["accuracy"] is None and any(w.startswith("accuracy not computed: ") for w in unknown.warnings)


def test_quantize_model_results_that_fail_their_checks_are_never_written(model, tmp_path, monkeypatch):
    """A result onnx.checker refuses, one onnxruntime cannot load, one with non-finite logits: CheckFailed, nothing written."""
    import shutil

    import onnx.checker

    import alexnet_deploy.quantize.pipeline as pipeline
    from alexnet_deploy.errors import CheckFailed, InputError

    source = tmp_path / "tiny.onnx"
    shutil.copy(model, source)
    output = tmp_path / "half.onnx"
    real_runtime, real_check = pipeline.OrtRuntime, onnx.checker.check_model

    def failure(where, name, replacement):
        with monkeypatch.context() as patched:
            patched.setattr(where, name, replacement)
            with pytest.raises(CheckFailed) as caught:
                pipeline.quantize_model(source, "fp16", output=output, measure_latency=False)
        assert not output.exists()
        return caught.value.problem, caught.value.fix

    def checker(data, *args, **kwargs):
        if isinstance(data, bytes):  # only the result: the source was checked when it was loaded
            raise onnx.checker.ValidationError("Nodes in a graph must be topologically sorted\nmore detail")
        return real_check(data, *args, **kwargs)

    assert failure(onnx.checker, "check_model", checker) == (
        "the fp16 model fails onnx.checker (Nodes in a graph must be topologically sorted); nothing was written.", "run with --debug and report it")

    def unloadable(model, **kwargs):
        if isinstance(model, bytes):
            raise InputError("an op onnxruntime has no kernel for", "x")
        return real_runtime(model, **kwargs)

    assert failure(pipeline, "OrtRuntime", unloadable) == (
        "the fp16 model does not load in onnxruntime (an op onnxruntime has no kernel for); nothing was written.", "run with --debug and report it")

    def overflowing(model, **kwargs):
        runtime = real_runtime(model, **kwargs)
        if isinstance(model, bytes):
            run_all = runtime.run_all
            runtime.run_all = lambda *a, **k: run_all(*a, **k) * np.float32("inf")
        return runtime

    assert failure(pipeline, "OrtRuntime", overflowing) == (
        "the fp16 model produces non-finite logits (overflow); nothing was written.", "use another precision or report it with --debug")


def test_quantize_model_option_refusals_name_the_problem_and_the_fix(model, tmp_path):
    """Refused before any work: each refusal's problem and fix, and the smallest values that are allowed."""
    import hashlib
    import shutil

    import onnx

    from alexnet_deploy.errors import InputError
    from alexnet_deploy.quantize.pipeline import quantize_model
    from alexnet_deploy.record import read_record

    source = tmp_path / "tiny.onnx"
    shutil.copy(model, source)

    def refusal(precision, **kwargs):
        with pytest.raises(InputError) as caught:
            quantize_model(source, precision, output=tmp_path / "r.onnx", measure_latency=False, **kwargs)
        assert not (tmp_path / "r.onnx").exists()
        return caught.value.problem, caught.value.fix

    assert refusal("int4") == ("unknown precision 'int4'.", "use --precision fp16|int8|int8-dynamic")
    assert refusal("fp16", target="gpu") == ("unknown target 'gpu'.", "use --target cpu|tensorrt")
    assert refusal("fp16", method="minmax") == ("--method applies to static int8 only, not fp16.", "drop --method, or use --precision int8")
    assert refusal("int8-dynamic", calib_samples=8) == ("--calib-samples applies to static int8 only, not int8-dynamic.",
                                                       "drop --calib-samples, or use --precision int8")
    assert refusal("int8-dynamic", target="tensorrt") == ("int8-dynamic is an onnxruntime recipe; TensorRT has no dynamic quantization.",
                                                         "use --precision int8 --target tensorrt (static Q/DQ)")
    assert refusal("int8") == ("int8 needs representative images to calibrate on.",
                               "add --calib DIR (a few hundred training or validation images), or --calib synthetic to accept unknown accuracy")
    # Allowed: --method with static int8, one calibration image, FP16 for TensorRT.
    one = quantize_model(source, "int8", output=tmp_path / "one.onnx", calib="synthetic", calib_samples=1, method="minmax", search=False, measure_latency=False,
                         allow_drop=True)
    assert one.written and one.calibration["images"] == 1
    trt = quantize_model(source, "fp16", target="tensorrt", output=tmp_path / "trt.onnx", measure_latency=False)
    entry = read_record(onnx.load(trt.output), "trt").details["quantization"]
    assert entry["recipe"] == trt.recipe and entry["source_onnx_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
