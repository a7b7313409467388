"""`alexnet verify`: pass on a faithful export, fail (exit 1) and name the layer on a corrupted one."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from alexnet_deploy.checkpoints.demo import make_sample_images

FIELDS = {"passed", "max_abs_err", "max_rel_err", "min_cosine", "top1_agreement", "top5_agreement", "samples", "batch_sizes", "first_divergent_layer"}


def corrupt(src, dst, initializer: str, scale: float = -3.0):
    model = onnx.load(str(src))
    for init in model.graph.initializer:
        if init.name == initializer:
            array = numpy_helper.to_array(init).copy()
            array[: max(1, len(array) // 4)] *= scale
            init.CopyFrom(numpy_helper.from_array(array, init.name))
            break
    else:
        raise AssertionError(f"no initializer {initializer}")
    onnx.save(model, str(dst))


def test_verify_passes_with_json_fields(cli, half_width, half_width_onnx, tmp_path):
    report = tmp_path / "report.json"
    cli.ok("verify", half_width_onnx, "--checkpoint", half_width[0], "--json", report, "--batch-sizes", "1,3", "--samples", "5")
    data = json.loads(report.read_text())
    assert FIELDS <= set(data)
    assert data["passed"] is True and data["batch_sizes"] == [1, 3] and data["samples"] == 5
    assert data["max_rel_err"] <= 1e-4 and data["min_cosine"] >= 0.99999
    assert data["top1_agreement"] == 1.0 and data["first_divergent_layer"] is None


def test_verify_json_numbers_match_an_independent_computation(half_width, half_width_onnx):
    """The reported max abs error equals one computed here from torch and onnxruntime directly."""
    import onnxruntime as ort

    from alexnet_deploy.verify.jobs import verify_checkpoint
    from alexnet_deploy.verify.parity import build_inputs

    report = verify_checkpoint(half_width_onnx, half_width[0], samples=4, batch_sizes=[4])
    x, _, _ = build_inputs(224, 4, None, None)
    with torch.no_grad():
        ref = half_width[1](torch.from_numpy(x)).numpy()
    got = ort.InferenceSession(str(half_width_onnx)).run(None, {"input": x})[0]
    assert report.max_abs_err == pytest.approx(float(np.abs(got - ref).max()), rel=1e-6)
    assert report.max_rel_err == pytest.approx(float((np.abs(got - ref).max(axis=1) / np.abs(ref).max(axis=1)).max()), rel=1e-6)


@pytest.mark.parametrize("initializer, layer", [("features.3.weight", "features.3"), ("classifier.4.weight", "classifier.4")])
def test_corrupted_onnx_fails_and_names_the_layer(cli, half_width, half_width_onnx, tmp_path, initializer, layer):
    bad = tmp_path / "corrupted.onnx"
    corrupt(half_width_onnx, bad, initializer)
    result = cli.fails(1, "verify", bad, "--checkpoint", half_width[0], "--json", "-")
    data = json.loads(result.stdout)
    assert data["passed"] is False
    assert data["first_divergent_layer"] == layer
    table = cli.fails(1, "verify", bad, "--checkpoint", half_width[0])
    assert "FAIL" in table.stdout and layer in table.stdout


def test_verify_with_images_uses_the_models_preprocessing(cli, half_width, half_width_onnx, tmp_path):
    images = tmp_path / "imgs"
    make_sample_images(images, count=3)
    (images / "broken.jpg").write_bytes(b"not an image")
    data = json.loads(cli.ok("verify", half_width_onnx, "--checkpoint", half_width[0], "--images", images, "--samples", "2", "--json", "-").stdout)
    assert data["passed"] and data["samples"] == 5 and data["images"] == 3
    assert len(data["skipped_images"]) == 1


def test_verify_notes_a_different_checkpoint(cli, half_width_onnx, tmp_path, half_width):
    state = torch.load(half_width[0], weights_only=True)
    state["classifier.6.bias"] = state["classifier.6.bias"] + 0.5
    other = tmp_path / "other.pth"
    torch.save(state, other)
    result = cli.fails(1, "verify", half_width_onnx, "--checkpoint", other, "--json", "-")
    data = json.loads(result.stdout)
    assert any("different checkpoint" in note for note in data["notes"])
    assert data["first_divergent_layer"] == "classifier.6"


@pytest.mark.slow  # seconds each: a subprocess, a Ray instance or a full-size export
def test_verify_of_an_ambiguous_checkpoint_uses_the_recorded_layout(cli, tmp_path):
    """A paper-224 export verifies without re-passing --arch: the ONNX record names the layout."""
    from seed_models import Seed000AlexNet, alive

    model = alive(Seed000AlexNet(3), 1)
    path = tmp_path / "caffe.pth"
    torch.save(model.state_dict(), path)
    out = tmp_path / "caffe.onnx"
    cli.ok("export", path, "-o", out, "--arch", "caffe-227", "--no-verify")
    data = json.loads(cli.ok("verify", out, "--checkpoint", path, "--json", "-", "--batch-sizes", "2", "--samples", "2").stdout)
    assert data["passed"]


def test_bad_batch_sizes(cli, half_width, half_width_onnx):
    result = cli.fails(2, "verify", half_width_onnx, "--checkpoint", half_width[0], "--batch-sizes", "0,x")
    assert "--batch-sizes" in result.stderr
