"""Bad input: one or two lines naming the problem and the fix, exit 2, nothing written or replaced."""

from __future__ import annotations

import os
import zipfile

import pytest
import torch

from alexnet_deploy.fileio import atomic_write


def assert_clean_error(result, *needles):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert 1 <= len(lines) <= 2, result.stderr
    assert lines[0].startswith("error:")
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)


@pytest.fixture
def out(tmp_path):
    return tmp_path / "out.onnx"


def _no_output(out):
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")], "temporary file left behind"


def test_missing_checkpoint(cli, tmp_path, out):
    assert_clean_error(cli.fails(2, "export", tmp_path / "nope.pth", "-o", out), "does not exist")
    _no_output(out)


def test_directory_as_checkpoint(cli, tmp_path, out):
    assert_clean_error(cli.fails(2, "export", tmp_path, "-o", out), "is a directory")


@pytest.mark.parametrize(
    "content, needle",
    [
        (b"", "empty"),
        (b"hello, this is not a checkpoint\n", "is not a PyTorch checkpoint (it is a text file starting 'hello, this is not a checkpoint')"),
        # A labels file: its first byte is pickle's GLOBAL opcode, which once read it as a class "at.dog".
        (b"cat\ndog\n", "is not a PyTorch checkpoint (it is a text file starting 'cat')"),
        (b"\xff\xfe" + os.urandom(4094), "is not a PyTorch checkpoint (it starts with the bytes ff fe"),
        (b"\x80\x02" + os.urandom(4094), "not a readable PyTorch checkpoint"),
    ],
    ids=["empty", "text", "labels-text", "random-bytes", "broken-pickle"],
)
def test_unreadable_files(cli, tmp_path, out, content, needle):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    assert_clean_error(cli.fails(2, "export", path, "-o", out), needle)
    _no_output(out)


def test_truncated_checkpoint(cli, half_width, tmp_path, out):
    data = half_width[0].read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: len(data) // 3])
    assert_clean_error(cli.fails(2, "export", path, "-o", out), "truncated")
    _no_output(out)


def test_non_alexnet_checkpoint(cli, tmp_path, out):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 30 * 30, 4))
    path = tmp_path / "cnn.pth"
    torch.save(net.state_dict(), path)
    assert_clean_error(cli.fails(2, "export", path, "-o", out), "not one of the built-in AlexNet layouts", "--model")
    _no_output(out)


def test_one_tensor_of_wrong_shape(cli, half_width, tmp_path, out):
    state = torch.load(half_width[0], weights_only=True)
    state["features.3.weight"] = torch.zeros(128, 48, 3, 3)
    path = tmp_path / "wrong.pth"
    torch.save(state, path)
    result = cli.fails(2, "export", path, "-o", out)
    assert_clean_error(result, "features.3.weight has shape [128, 48, 3, 3]", "[128, 48, 5, 5]")
    _no_output(out)


def test_missing_key_is_named(cli, half_width, tmp_path, out):
    state = torch.load(half_width[0], weights_only=True)
    del state["classifier.4.bias"]
    path = tmp_path / "missing.pth"
    torch.save(state, path)
    assert_clean_error(cli.fails(2, "export", path, "-o", out, "--arch", "half-width"), "missing classifier.4.bias")


def test_labels_count_mismatch(cli, half_width, tmp_path, out):
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    assert_clean_error(cli.fails(2, "export", half_width[0], "-o", out, "--labels", labels), "2 labels", "5 classes")
    _no_output(out)


@pytest.mark.parametrize("spec, needle", [("nowhere.py:AlexNet", "does not exist"), ("{model}:NoSuchClass", "no nn.Module class named 'NoSuchClass'"), ("{model}", "not FILE.py:ClassName")])
def test_bad_model_flag(cli, half_width, tmp_path, out, spec, needle):
    model = tmp_path / "model.py"
    model.write_text("import torch.nn as nn\nclass AlexNet(nn.Module):\n    pass\n")
    assert_clean_error(cli.fails(2, "export", half_width[0], "-o", out, "--model", spec.format(model=model)), needle)
    _no_output(out)


def test_model_file_importing_missing_package(cli, half_width, tmp_path, out):
    model = tmp_path / "model.py"
    model.write_text("from d2l import torch as d2l\nimport torch.nn as nn\nclass Net(nn.Module):\n    pass\n")
    assert_clean_error(cli.fails(2, "export", half_width[0], "-o", out, "--model", f"{model}:Net"), "imports 'd2l'")


@pytest.mark.parametrize("kind", ["missing-dir", "is-dir", "wrong-suffix"])
def test_unwritable_output(cli, half_width, tmp_path, kind):
    target = {"missing-dir": tmp_path / "no" / "such" / "m.onnx", "is-dir": tmp_path, "wrong-suffix": tmp_path / "m.pth"}[kind]
    assert_clean_error(cli.fails(2, "export", half_width[0], "-o", target))


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only directories")
def test_read_only_output_directory(cli, half_width, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        assert_clean_error(cli.fails(2, "export", half_width[0], "-o", folder / "m.onnx"), "not writable")
    finally:
        folder.chmod(0o700)


def test_existing_file_is_not_replaced_by_a_failed_export(cli, half_width, tmp_path):
    good = tmp_path / "model.onnx"
    good.write_bytes(b"previous good model")
    labels = tmp_path / "labels.txt"
    labels.write_text("only-one\n")
    cli.fails(2, "export", half_width[0], "-o", good, "--labels", labels)
    assert good.read_bytes() == b"previous good model"


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")

    def half_written(tmp):
        tmp.write_bytes(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, half_written)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_onnx_to_verify(cli, half_width, half_width_onnx, tmp_path, damage):
    data = half_width_onnx.read_bytes()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes({"garbage": os.urandom(2048), "truncated": data[: len(data) // 2], "empty": b""}[damage])
    assert_clean_error(cli.fails(2, "verify", bad, "--checkpoint", half_width[0]))


def test_verify_with_wrong_checkpoint_layout(cli, half_width_onnx, seed_checkpoints):
    other, _, _ = seed_checkpoints("layers-fc", 5)
    assert_clean_error(cli.fails(2, "verify", half_width_onnx, "--checkpoint", other), "half-width")


def test_bad_option_values(cli, half_width, out):
    assert_clean_error(cli.fails(2, "export", half_width[0], "-o", out, "--batch", "zero"), "--batch")
    assert_clean_error(cli.fails(2, "export", half_width[0], "-o", out, "--mean", "0.5,0.5"), "--mean")
    assert_clean_error(cli.fails(2, "export", half_width[0], "-o", out, "--arch", "vgg"), "--arch", "'vgg' is not one of")
    _no_output(out)


def test_debug_shows_the_traceback(tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "alexnet_deploy", "inspect", str(tmp_path / "none.pth"), "--debug"], capture_output=True, text=True)
    assert result.returncode != 0 and "Traceback" in result.stderr
    plain = subprocess.run([sys.executable, "-m", "alexnet_deploy", "inspect", str(tmp_path / "none.pth")], capture_output=True, text=True)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr and "does not exist" in plain.stderr
    before = subprocess.run([sys.executable, "-m", "alexnet_deploy", "--debug", "inspect", str(tmp_path / "none.pth")], capture_output=True, text=True)
    assert before.returncode == 2 and "Traceback" in before.stderr
    assert "--debug" in subprocess.run([sys.executable, "-m", "alexnet_deploy", "--help"], capture_output=True, text=True).stdout


def test_debug_before_the_command_in_process(cli, tmp_path, monkeypatch):
    """The documented ``alexnet --debug CMD``, parsed by the app itself (as when embedded), not only by main()."""
    from alexnet_deploy.cli.app import DEBUG_ENV

    monkeypatch.delenv(DEBUG_ENV, raising=False)
    result = cli("--debug", "inspect", tmp_path / "none.pth")
    assert result.exit_code == 2 and "Traceback" in result.stderr
    assert DEBUG_ENV not in os.environ  # for that invocation only
    again = cli("inspect", tmp_path / "none.pth")
    assert again.exit_code == 2 and "Traceback" not in again.stderr


def test_zip_that_is_not_a_checkpoint(cli, tmp_path, out):
    path = tmp_path / "weights.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "not torch")
    assert_clean_error(cli.fails(2, "export", path, "-o", out), "not a readable PyTorch checkpoint")


def test_swapped_arguments_get_a_pointed_hint(cli, half_width, half_width_onnx, tmp_path):
    assert_clean_error(cli.fails(2, "export", half_width_onnx, "-o", tmp_path / "x.onnx"), "already an ONNX model")
    assert_clean_error(cli.fails(2, "verify", half_width[0], "--checkpoint", half_width_onnx), "is a PyTorch checkpoint, not an ONNX model")


def test_input_size_the_model_cannot_take(cli, half_width, tmp_path):
    assert_clean_error(cli.fails(2, "export", half_width[0], "-o", tmp_path / "x.onnx", "--input-size", "256"), "does not accept a 3x256x256 input")


def test_paths_with_brackets_are_printed_verbatim(cli, tmp_path):
    folder = tmp_path / "[run-3]" / "[/x]"
    folder.mkdir(parents=True)
    assert_clean_error(cli.fails(2, "inspect", folder / "a.pth"), "[run-3]/[/x]/a.pth")


def test_verify_against_a_checkpoint_with_another_class_count(cli, half_width_onnx, seed_checkpoints):
    other, _, _ = seed_checkpoints("half-width", 10)
    assert_clean_error(cli.fails(2, "verify", half_width_onnx, "--checkpoint", other), "5 classes", "has 10")


def test_quickstart_with_an_unwritable_json_path_makes_nothing(cli, tmp_path):
    target = tmp_path / "qs"
    result = cli.fails(2, "quickstart", target, "--json", tmp_path / "missing" / "report.json")
    assert "JSON report directory" in result.stderr and not target.exists()


@pytest.mark.parametrize("args", [
    ["export", "{ckpt}"],
    ["quickstart", "{tmp}/qs"],
    ["eval", "{ckpt}", "--data", "{tmp}", "--runtime", "torch"],
    ["bench", "{ckpt}", "--runtime", "torch"],
    ["verify", "{tmp}/m.onnx", "--checkpoint", "{ckpt}"],
], ids=["export", "quickstart", "eval-torch", "bench-torch", "verify-checkpoint"])
def test_without_torch_the_install_line_not_an_internal_error(tmp_path, args):
    """The install the README describes for the runtime side has no torch: commands that need it
    say which extra to install (exit 4); they used to end in "internal error: ModuleNotFoundError" (exit 3)."""
    import subprocess
    import sys

    ckpt = tmp_path / "model.pth"
    ckpt.write_bytes(b"PK\x03\x04 not really")
    (tmp_path / "cls").mkdir()
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "cls" / "a.png")
    (tmp_path / "m.onnx").write_bytes(b"\x08\x07")
    argv = [a.format(ckpt=ckpt, tmp=tmp_path) for a in args]
    code = "import sys; sys.modules['torch'] = None\nfrom alexnet_deploy.cli import main\nmain(sys.argv[1:])"
    result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert result.returncode == 4, (result.returncode, result.stderr)
    assert "pip install 'alexnet-deploy[torch]'" in result.stderr and "Traceback" not in result.stderr and "internal error" not in result.stderr
