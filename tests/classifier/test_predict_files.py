"""`alexnet predict` on folders of real size: every image, in order, equal to the model on torchvision's
inputs; rows streamed into one Parquet or JSON Lines file, atomically."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from tiny_model import CLASSES, tiny_model, torchvision_input, write_images


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("model") / "tiny.onnx")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """200 images (more than six chunks of the default batch of 32), two of them undecodable."""
    root = tmp_path_factory.mktemp("many")
    paths = write_images(root, 200)
    (root / "img0050.png").write_bytes(b"garbage")
    (root / "img0150.png").write_bytes(b"\xff\xd8\xff truncated")
    return root, paths


def _expected(model, paths, topk=3):
    """Top-k per image from a bare onnxruntime session on torchvision's inputs (not the code under test)."""
    import onnxruntime as ort

    from alexnet_deploy.classifier import softmax
    from alexnet_deploy.record import read_record_from_path

    spec = read_record_from_path(model).preprocessing
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": np.stack([torchvision_input(p, spec) for p in paths])})[0]
    probabilities = softmax(logits)
    return [[(CLASSES[i], float(row[i])) for i in np.argsort(-row, kind="stable")[:topk]] for row in probabilities]


def test_every_image_in_order_at_every_batch_size(model, folder):
    from alexnet_deploy.predict import predict_files

    root, paths = folder
    good = [p for p in paths if p.name not in ("img0050.png", "img0150.png")]
    expected = _expected(model, good)
    for batch, workers in ((32, None), (7, 1), (64, 3)):
        result = predict_files(model, [root], topk=3, batch=batch, workers=workers)
        assert [p["image"] for p in result["predictions"]] == [str(p) for p in good], batch
        for item, want in zip(result["predictions"], expected):
            assert [label for label, _ in item["top"]] == [label for label, _ in want]
            np.testing.assert_allclose([p for _, p in item["top"]], [p for _, p in want], rtol=0, atol=1e-5)
        assert [s["image"] for s in result["skipped"]] == [str(root / "img0050.png"), str(root / "img0150.png")]
        assert result["images"] == 198


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_output_file_holds_every_row_with_errors_in_place(cli, model, folder, tmp_path, suffix):
    root, paths = folder
    out = tmp_path / f"preds{suffix}"
    result = cli.ok("predict", model, root, "-o", out, "--topk", "2", "--json")
    report = json.loads(result.stdout)
    assert report["output"] == str(out) and report["predictions"] is None and report["images"] == 198
    if suffix == ".jsonl":
        rows = [json.loads(line) for line in out.read_text().splitlines()]
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(out)
        assert table.column_names == ["path", "labels", "probabilities", "error"]
        rows = table.to_pylist()
    assert [r["path"] for r in rows] == [str(p) for p in paths]  # skipped images keep their place
    expected = iter(_expected(model, [p for p in paths if p.name not in ("img0050.png", "img0150.png")], topk=2))
    for row in rows:
        if row["path"].endswith(("img0050.png", "img0150.png")):
            assert row["labels"] == [] and "cannot be decoded" in row["error"]
            continue
        want = next(expected)
        assert row["error"] == "" and row["labels"] == [label for label, _ in want]
        np.testing.assert_allclose(row["probabilities"], [p for _, p in want], rtol=0, atol=1e-5)


def test_output_file_errors_leave_nothing_behind(cli, model, tmp_path, monkeypatch):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"nope")
    out = tmp_path / "p.jsonl"
    out.write_text("an earlier run's rows\n")
    assert "could be decoded" in cli.fails(2, "predict", model, bad, "-o", out).stderr
    assert out.read_text() == "an earlier run's rows\n" and sorted(p.name for p in tmp_path.iterdir()) == ["bad", "p.jsonl"]
    assert "not a predictions format" in cli.fails(2, "predict", model, bad, "-o", tmp_path / "p.csv").stderr
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as where it is not installed
    assert "pip install 'alexnet-deploy[parquet]'" in cli.fails(4, "predict", model, bad, "-o", tmp_path / "p.parquet").stderr
    assert "--workers 0 must be at least 1" in cli.fails(2, "predict", model, bad, "--workers", "0").stderr


@pytest.mark.slow  # a full-size AlexNet on a hundred ordinary photos: the defaults as users run them
def test_full_size_model_on_ordinary_jpegs_with_the_defaults(cli, half_width_onnx, tmp_path):
    """500x375 JPEGs through the 224-pixel model with predict's own defaults (batch 32, one decode
    thread per CPU): every image, in order, equal to onnxruntime on torchvision's inputs."""
    from PIL import Image

    from alexnet_deploy.datasets import synthetic_image
    from alexnet_deploy.record import read_record_from_path

    rng = np.random.default_rng(4)
    folder = tmp_path / "photos"
    folder.mkdir()
    paths = []
    for i in range(100):
        path = folder / f"photo{i:03d}.jpg"
        synthetic_image(rng).resize((500, 375), Image.Resampling.BILINEAR).save(path, quality=85)
        paths.append(path)
    result = json.loads(cli.ok("predict", half_width_onnx, folder, "--json", "--topk", "1").stdout)
    assert [p["image"] for p in result["predictions"]] == [str(p) for p in paths] and result["skipped"] == []
    import onnxruntime as ort

    spec = read_record_from_path(half_width_onnx).preprocessing
    session = ort.InferenceSession(str(half_width_onnx), providers=["CPUExecutionProvider"])
    labels = read_record_from_path(half_width_onnx).labels
    for start in range(0, len(paths), 25):
        logits = session.run(None, {"input": np.stack([torchvision_input(p, spec) for p in paths[start:start + 25]])})[0]
        for item, row in zip(result["predictions"][start:start + 25], logits):
            assert item["top"][0][0] == labels[int(np.argmax(row))]


def test_output_file_takes_names_that_are_not_utf8(cli, model, tmp_path):
    """Linux file names are bytes: a name that is not UTF-8 is written with \\xNN escapes (it crashed the writer)."""
    import os

    folder = tmp_path / "odd"
    write_images(folder, 2)
    os.rename(folder / "img0000.jpg", os.path.join(os.fsencode(folder), b"caf\xe9.jpg"))
    for suffix in (".jsonl", ".parquet"):
        out = tmp_path / f"p{suffix}"
        cli.ok("predict", model, folder, "-o", out)
        if suffix == ".jsonl":
            paths = [json.loads(line)["path"] for line in out.read_text().splitlines()]
        else:
            import pyarrow.parquet as pq

            paths = pq.read_table(out).column("path").to_pylist()
        assert sorted(os.path.basename(p) for p in paths) == ["caf\\xe9.jpg", "img0001.png"]
