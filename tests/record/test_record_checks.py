"""A model file's record is checked when it is read: a damaged or hostile record is a one-line
error (exit 2) before any image is decoded, in every command that reads it."""

from __future__ import annotations

import json
import math

import pytest

from tiny_model import tiny_model, write_images

CASES = {
    "resize-huge": ({"preprocessing": {"resize": 60000}}, "resize"),  # predict of one 64x64 image took 93 s and 14 GB
    "resize-tiny": ({"preprocessing": {"resize": 2}}, "not within 4x of crop"),
    "resize-overflow": ({"preprocessing": {"resize": 1e999}}, "damaged alexnet-deploy metadata"),  # int(inf): an internal error
    "mean-nan": ({"preprocessing": {"mean": [math.nan, 0.5, 0.5]}}, "finite"),  # gave nan% with exit 0
    "std-inf": ({"preprocessing": {"std": [0.2, math.inf, 0.2]}}, "finite"),
    "std-zero": ({"preprocessing": {"std": [0.2, 0.0, 0.2]}}, "std values must be positive"),
    "crop-not-input": ({"preprocessing": {"crop": 24, "resize": 28}}, "crops to 24x24 but its graph takes 16x16"),
    "labels-short": ({"labels": ["apple", "banana"]}, "has 2 labels but its graph outputs 3 classes"),  # an IndexError in predict, 500s in serve
    "labels-long": ({"labels": ["apple", "banana", "cherry", "date"]}, "has 4 labels but its graph outputs 3 classes"),
    "label-line-break": ({"labels": ["apple", "ban\nana", "cherry"]}, "contains a line break"),  # faked extra output lines
    "label-not-text": ({"labels": ["apple", 2, "cherry"]}, "labels must be a non-empty list of strings"),
}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imgs")
    write_images(folder / "apple", 2)
    write_images(folder / "banana", 1, seed=1)
    write_images(folder / "cherry", 1, seed=2)
    return folder


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_record_is_one_line_exit_2_before_any_image_is_decoded(cli, tmp_path, images, monkeypatch, case):
    import alexnet_deploy.imaging as imaging

    edits, words = CASES[case]
    model = tiny_model(tmp_path / "bad.onnx", preprocessing=edits.get("preprocessing"), labels=edits.get("labels"))
    decoded = []
    monkeypatch.setattr(imaging, "decode_rgb", lambda *a, **k: decoded.append(a) or pytest.fail("an image was decoded"))
    for args in (["predict", model, images], ["eval", model, "--data", images], ["quantize", model, "-p", "int8", "--calib", images],
                 ["package", model, "--triton", tmp_path / "repo"], ["inspect", model]):
        result = cli.fails(2, *args)
        error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(error) == 1 and words in error[0], (args[0], result.stderr)
    assert decoded == [] and not (tmp_path / "repo").exists()


def test_the_classifier_refuses_it_too(tmp_path):
    from alexnet_deploy import Classifier
    from alexnet_deploy.errors import InputError

    model = tiny_model(tmp_path / "bad.onnx", labels=["apple"])
    with pytest.raises(InputError, match="has 1 labels but its graph outputs 3 classes"):
        Classifier(model)


def test_a_good_record_reads_back(tmp_path, images, cli):
    model = tiny_model(tmp_path / "good.onnx")
    report = json.loads(cli.ok("eval", model, "--data", images, "--json").stdout)
    assert report["n"] == 4 and report["labels"] == ["apple", "banana", "cherry"]
