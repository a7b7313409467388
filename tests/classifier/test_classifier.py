"""Classifier and `alexnet predict`: labels and preprocessing from the file, torchvision-equal
preprocessing, the seed class's own predictions, thread safety, no torch import."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from alexnet_deploy.checkpoints.demo import make_sample_images


@pytest.fixture(scope="session")
def images(store):
    return make_sample_images(store / "classifier_images", 10, seed=5)


@pytest.fixture(scope="session")
def classifier(half_width_onnx):
    from alexnet_deploy import Classifier

    return Classifier(half_width_onnx)


def _torchvision_batch(paths, spec):
    """torchvision's own transforms with the parameters the model file records."""
    from PIL import Image
    from torchvision import transforms as T

    resize = T.Resize(spec.resize) if spec.resize_mode == "shorter" else T.Resize((spec.resize, spec.resize))
    transform = T.Compose([resize, T.CenterCrop(spec.crop), T.ToTensor(), T.Normalize(spec.mean, spec.std)])
    out = []
    for path in paths:
        with Image.open(path) as image:
            out.append(transform(image.convert("RGB")))
    return torch.stack(out)


def test_predictions_match_the_seed_class_on_torchvision_inputs(classifier, half_width, images):
    _, model, _ = half_width
    reference = _torchvision_batch(images, classifier.preprocessing)
    np.testing.assert_allclose(classifier.preprocess(images), reference.numpy(), atol=1e-6, rtol=0)
    with torch.no_grad():
        probabilities = torch.softmax(model.eval()(reference), dim=1).numpy()
    got = classifier.predict(images, topk=3)
    assert len(got) == len(images)
    for row, top in zip(probabilities, got):
        assert [label for label, _ in top] == [classifier.labels[i] for i in np.argsort(-row)[:3]]
        assert [p for _, p in top] == pytest.approx(sorted(row, reverse=True)[:3], abs=1e-4)
    np.testing.assert_allclose(classifier.logits(reference.numpy()), model(reference).detach().numpy(), rtol=1e-4, atol=1e-4)


def test_one_image_in_any_form(classifier, images):
    from PIL import Image

    path = images[0]
    by_path = classifier.predict(path)
    with Image.open(path) as image:
        pil = image.convert("RGB")
    assert classifier.predict(pil) == by_path == classifier.predict(str(path))
    assert classifier.predict(np.asarray(pil)) == by_path
    assert classifier.predict([path, pil]) == [by_path, by_path]
    encoded = Path(path).read_bytes()  # the file's bytes, as a server or an object store hands them over
    assert classifier.predict(encoded) == by_path and classifier.predict([encoded, bytearray(encoded)]) == [by_path, by_path]
    assert len(by_path) == 5 and classifier.labels[0] == "daisy"
    assert classifier.predict(path, topk=50) and len(classifier.predict(path, topk=50)) == 5
    from alexnet_deploy.errors import InputError

    with pytest.raises(InputError, match="HxWx3 uint8"):
        classifier.predict(np.zeros((10, 10), np.float32)[None])
    with pytest.raises(InputError, match=r"image bytes: cannot be decoded \(UnidentifiedImageError\)"):
        classifier.predict(b"not an image")
    with pytest.raises(InputError, match="NCHW"):
        classifier.logits(np.zeros((3, 224, 224), np.float32))


def test_eight_threads_get_exactly_the_serial_results(classifier, images):
    jobs = [images[i % len(images):] + images[:i % len(images)] for i in range(8)]
    serial = [classifier.predict(job) for job in jobs]
    results: list = [None] * 8
    barrier = threading.Barrier(8)

    def work(index):
        barrier.wait()
        for _ in range(3):
            results[index] = classifier.predict(jobs[index])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == serial


def test_classifier_imports_no_torch(half_width_onnx, images):
    code = f"""
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torch" or name.startswith("torch.") or name.startswith("torchvision"):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, Block())
from alexnet_deploy import Classifier
top = Classifier({str(half_width_onnx)!r}).predict({str(images[0])!r}, topk=2)
assert "torch" not in sys.modules
print(top[0][0])
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in {"daisy", "dandelion", "roses", "sunflowers", "tulips"}


def test_predict_cli(cli, half_width_onnx, images, tmp_path, classifier):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for path in images[:3]:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    result = cli.ok("predict", half_width_onnx, folder, "--topk", 2, "--json")
    data = json.loads(result.stdout)
    assert len(data["predictions"]) == 3 and data["skipped"][0]["image"].endswith("broken.jpg")
    for item in data["predictions"]:
        assert [tuple(t) for t in item["top"]] == [tuple(t) for t in classifier.predict(Path(item["image"]), topk=2)]
    text = cli.ok("predict", half_width_onnx, images[0]).stdout
    assert Path(images[0]).name in text and "%" in text
    assert "does not exist" in cli.fails(2, "predict", half_width_onnx, tmp_path / "nope.jpg").stderr
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "x.png").write_bytes(b"")
    assert "could be decoded" in cli.fails(2, "predict", half_width_onnx, only_bad).stderr


def test_predict_lists_an_image_named_twice_once(cli, half_width_onnx, images, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for path in images[:2]:
        (folder / path.name).write_bytes(path.read_bytes())
    named = folder / images[0].name
    # named on its own, inside its folder, and again through another spelling of the same path
    data = json.loads(cli.ok("predict", half_width_onnx, named, folder, folder / ".." / "imgs" / images[0].name, "--json").stdout)
    assert [Path(item["image"]).name for item in data["predictions"]] == [images[0].name, images[1].name]


@pytest.mark.slow
def test_readme_embedding_example_runs_verbatim(cli, tmp_path, monkeypatch):
    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text() + "".join(p.read_text() for p in sorted((root / "docs").glob("*.md")))  # the examples, wherever documented
    block = readme.split("<!-- readme: embedding example -->", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    cli.ok("quickstart", "--skip-training")  # the embedding example needs only alexnet.onnx and samples/
    result = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("Classifier(") and "10 classes" in lines[0]
    top3 = eval(lines[1])  # the printed list of (label, probability) pairs
    assert len(top3) == 3 and top3[0][1] >= top3[1][1] >= top3[2][1]
    assert lines[2].startswith("2 (")

    # The "What the ONNX file carries" example, run in the quickstart folder it names.
    record_block = readme.split("<!-- readme: record example -->", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    result = subprocess.run([sys.executable, "-c", record_block], capture_output=True, text=True, timeout=120, cwd=tmp_path / "alexnet-quickstart")
    assert result.returncode == 0, result.stderr
    from alexnet_deploy import Classifier

    expected = Classifier(tmp_path / "alexnet-quickstart" / "alexnet.onnx").predict(tmp_path / "alexnet-quickstart" / "samples" / "sample_0.png", topk=1)[0][0]
    assert result.stdout.strip() == expected
