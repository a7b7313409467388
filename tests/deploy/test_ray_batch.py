"""``predict --ray``: Ray Data gives exactly the local path's predictions (computed here by Classifier directly)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alexnet_deploy.cli.app import normalise_optional_flags

TESTS = Path(__file__).resolve().parents[1]  # tests/, where ray_hooks.py lives
ROOT = TESTS.parent
N_IMAGES = 240


def test_bare_ray_flag_keeps_the_next_source():
    """A bare --ray is completed; an address after it is its value; a folder after it stays a source."""
    assert normalise_optional_flags(["predict", "m.onnx", "--ray", "imgs/"]) == ["predict", "m.onnx", "--ray", "local", "imgs/"]
    assert normalise_optional_flags(["predict", "m.onnx", "imgs/", "--ray"]) == ["predict", "m.onnx", "imgs/", "--ray", "local"]
    for address in ("auto", "ray://head:10001", "10.0.0.5:6379", "local"):
        assert normalise_optional_flags(["--ray", address, "imgs/"]) == ["--ray", address, "imgs/"]
    assert normalise_optional_flags(["--ray", "--json"]) == ["--ray", "local", "--json", "-"]


def test_missing_ray_names_the_extra(cli, half_width_onnx, tmp_path, monkeypatch):
    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as where it is not installed
    result = cli.fails(4, "predict", half_width_onnx, tmp_path, "--ray")
    assert "pip install 'alexnet-deploy[ray]'" in result.stderr


def test_ray_options_need_ray(cli, half_width_onnx, tmp_path):
    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    result = cli.fails(2, "predict", half_width_onnx, tmp_path, "--actors", "2")
    assert "--ray" in result.stderr


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray instance (2 CPUs) for this module, bounded in time, shut down at the end.

    Every worker runs tests/ray_hooks.py, which makes preprocessing fail on one image size.
    """
    ray = pytest.importorskip("ray", reason="ray[data] is not installed: pip install 'alexnet-deploy[ray]'")
    pytest.importorskip("ray.data")
    pytest.importorskip("pyarrow")
    from ray_hooks import POISON_SIZE

    path = os.pathsep.join([str(TESTS), str(ROOT), os.environ.get("PYTHONPATH", "")])
    ray.init(
        num_cpus=2, include_dashboard=False, log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}, "worker_process_setup_hook": "ray_hooks.poison_preprocessing"},
    )
    context = ray.data.DataContext.get_current()
    context.execution_no_progress_timeout_s = 120  # a stalled pipeline fails the test instead of waiting 30 minutes
    context.enable_progress_bars = False
    try:
        yield POISON_SIZE
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory, ray_local):
    """A few hundred small images of varied sizes and modes, one undecodable file, one image the workers refuse."""
    folder = tmp_path_factory.mktemp("ray_images")
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        height, width = rng.integers(24, 96, size=2)
        pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        image = Image.fromarray(pixels, "RGB")
        if i % 7 == 0:
            image = image.convert("L")
        sub = folder / f"part{i % 3}"
        sub.mkdir(exist_ok=True)
        image.save(sub / f"img{i:03d}.{'png' if i % 2 else 'jpg'}")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    Image.fromarray(rng.integers(0, 256, size=(ray_local[1], ray_local[0], 3), dtype=np.uint8), "RGB").save(folder / "refused.png")
    return folder


@pytest.fixture(scope="module")
def reference(half_width_onnx, image_folder):
    """The local path's answer: Classifier.predict on every decodable image, by absolute path."""
    from alexnet_deploy.classifier import Classifier
    from alexnet_deploy.preprocess import list_images

    paths = [p for p in list_images(image_folder) if p.name not in ("broken.jpg", "refused.png")]
    with Classifier(half_width_onnx, threads=1) as classifier:
        tops = classifier.predict([str(p) for p in paths], topk=3)
    return {str(p.resolve()): top for p, top in zip(paths, tops)}


def _check_rows(rows, reference):
    good = [r for r in rows if not r["error"]]
    assert len(good) == len(reference) == N_IMAGES
    for row in good:
        expected = reference[row["path"]]
        assert list(row["labels"]) == [label for label, _ in expected], row["path"]
        np.testing.assert_allclose(row["probabilities"], [p for _, p in expected], rtol=0, atol=1e-6)


@pytest.mark.slow  # seconds each: a subprocess, a Ray instance or a full-size export
def test_predict_ray_parquet_file_matches_local_path(cli, half_width_onnx, image_folder, reference, tmp_path):
    import pyarrow.parquet as pq

    output = tmp_path / "preds.parquet"
    report = tmp_path / "report.json"
    result = cli.ok("predict", half_width_onnx, image_folder, "--ray", "--topk", "3", "--batch", "16", "--output", output, "--json", report)
    table = pq.read_table(output)
    assert table.column_names == ["path", "labels", "probabilities", "error"]
    _check_rows(table.to_pylist(), reference)
    data = json.loads(report.read_text())
    assert data["images"] == N_IMAGES and data["model_transfer"] == "object-store"  # Ray was already running here
    reasons = {Path(s["image"]).name: s["reason"] for s in data["skipped"]}
    assert set(reasons) == {"broken.jpg", "refused.png"}
    assert "injected worker failure" in reasons["refused.png"]  # one worker failure loses only its image
    assert "skipped" in result.stderr and "broken.jpg" in result.stderr


@pytest.mark.slow  # seconds each: a subprocess, a Ray instance or a full-size export
def test_predict_ray_jsonl_folder_by_path(half_width_onnx, image_folder, reference, tmp_path):
    import pandas as pd

    from alexnet_deploy.deploy.ray_batch import predict_ray

    output = tmp_path / "preds"
    result = predict_ray(half_width_onnx, [image_folder], output=output, fmt="jsonl", topk=3, batch=64, model_transfer="path")
    assert result.model_transfer == "path" and result.images == N_IMAGES and len(result.skipped) == 2
    frame = pd.concat(pd.read_json(part, lines=True) for part in sorted(output.iterdir()) if part.suffix == ".json" or part.name.endswith(".jsonl"))
    frame["error"] = frame["error"].fillna("")
    _check_rows(frame.to_dict("records"), reference)


@pytest.mark.slow  # seconds each: a subprocess, a Ray instance or a full-size export
def test_eval_ray_matches_local_eval(cli, half_width_onnx, tmp_path, ray_local):
    """The same ImageFolder scored locally and on Ray: identical counts, confusion matrix and skipped files."""
    rng = np.random.default_rng(1)
    labels = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
    for i in range(60):
        folder = tmp_path / "val" / labels[i % 5]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, size=(40, 56, 3), dtype=np.uint8), "RGB").save(folder / f"{i}.png")
    (tmp_path / "val" / "roses" / "bad.jpg").write_bytes(b"not an image")
    local = json.loads(cli.ok("eval", half_width_onnx, "--data", tmp_path / "val", "--json").stdout)
    remote = json.loads(cli.ok("eval", half_width_onnx, "--data", tmp_path / "val", "--json", "--ray", "--batch", "16").stdout)
    for key in ("n", "top1", "top5", "confusion", "per_class", "labels"):
        assert remote[key] == local[key], key
    assert [Path(p).name for p in remote["skipped"]] == ["bad.jpg"]
    assert any("Ray" in note for note in remote["notes"])
