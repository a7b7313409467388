"""eval, verify and quantize refuse bad input with one clear line, exit 2, and nothing written."""

from __future__ import annotations

import pytest

from PIL import Image


def _folder(root, classes, count=2, size=40):
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.new("RGB", (size, size), (40 * i, 90, 200)).save(root / name / f"{i}.png")
    return root


def test_eval_bad_input(cli, half_width_onnx, half_width, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (30, 30)).save(flat / "a.png")
    junk = tmp_path / "junk" / "daisy"
    junk.mkdir(parents=True)
    (junk / "x.jpg").write_bytes(b"nope")
    wrong = _folder(tmp_path / "wrong", ["cat", "dog"])
    good = _folder(tmp_path / "good", ["daisy", "roses"])
    cases = {
        "does not exist": ["--data", tmp_path / "missing"],
        "no class sub-folders": ["--data", flat],
        "do not match": ["--data", wrong],
        "could be decoded": ["--data", junk.parent],
        "runs checkpoints": ["--data", good, "--runtime", "torch"],
        "does not end in .png": ["--data", good, "--confusion", tmp_path / "c.jpg"],
        "must be at least 1": ["--data", good, "--batch", 0],
    }
    for message, args in cases.items():
        result = cli.fails(2, "eval", half_width_onnx, *args)
        assert message in result.stderr, (args, result.stderr)
    assert "onnxruntime needs an ONNX file" in cli.fails(2, "eval", half_width[0], "--data", good, "--runtime", "ort").stderr
    assert not (tmp_path / "c.jpg").exists()


def test_eval_on_a_subset_of_classes(cli, half_width_onnx, tmp_path):
    import json

    good = _folder(tmp_path / "good", ["roses", "daisy"], count=3)
    data = json.loads(cli.ok("eval", half_width_onnx, "--data", good, "--json", "-").stdout)
    assert data["n"] == 6 and set(data["per_class"]) == {"daisy", "roses"}
    assert len(data["confusion"]) == 5 and sum(map(sum, data["confusion"])) == 6
    assert [sum(row) for row in data["confusion"]] == [3, 0, 3, 0, 0]  # rows in the model's label order


def test_verify_needs_exactly_one_reference(cli, half_width_onnx, half_width):
    assert "exactly one reference" in cli.fails(2, "verify", half_width_onnx).stderr
    assert "exactly one reference" in cli.fails(2, "verify", half_width_onnx, "--checkpoint", half_width[0], "--reference", half_width_onnx).stderr


def test_quantize_never_overwrites_its_source(cli, half_width_onnx):
    before = half_width_onnx.read_bytes()
    assert "overwrite the FP32 source" in cli.fails(2, "quantize", half_width_onnx, "-p", "fp16", "-o", half_width_onnx).stderr
    assert half_width_onnx.read_bytes() == before


@pytest.mark.slow  # seconds of subprocesses or timing waits
def test_quantize_and_verify_a_fixed_batch_model(cli, half_width, tmp_path):
    import json

    fixed = tmp_path / "fixed4.onnx"
    cli.ok("export", half_width[0], "-o", fixed, "--batch", 4, "--no-verify")
    images = tmp_path / "imgs"
    from alexnet_deploy.checkpoints.demo import make_sample_images

    make_sample_images(images, 6)
    out = tmp_path / "fixed4.int8.onnx"
    data = json.loads(cli.ok("quantize", fixed, "-p", "int8", "--calib", images, "--json", "-o", out).stdout)
    assert list(data["latency"]) == ["batch_4"] and data["calibration"]["images"] == 5
    report = json.loads(cli.ok("verify", out, "--reference", fixed, "--json", "-").stdout)
    assert report["batch_sizes"] == [4]


def test_eval_of_an_engine_says_to_use_its_onnx(cli, tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan bytes")
    (tmp_path / "val" / "cat").mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (32, 32)).save(tmp_path / "val" / "cat" / "a.png")
    result = cli.fails(2, "eval", engine, "--data", tmp_path / "val")
    assert "is a TensorRT engine" in result.stderr and "Traceback" not in result.stderr
