"""Every way people save checkpoints loads to the same weights; unsafe pickles never run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from alexnet_deploy.errors import CheckpointError
from alexnet_deploy.exporter.checkpoint import load_checkpoint
from seed_models import Seed003AlexNet, alive


@pytest.fixture(scope="module")
def reference():
    return alive(Seed003AlexNet(num_classes=5), 7)


def _same_weights(loaded: dict, model) -> None:
    expected = model.state_dict()
    assert set(loaded) == set(expected)
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key


FORMATS = {
    "bare": lambda sd: sd,
    "state_dict": lambda sd: {"state_dict": sd, "optimizer": {"lr": 0.1}, "epoch": 9, "best_acc": 0.87},
    "model_state_dict": lambda sd: {"epoch": 3, "model_state_dict": sd, "optimizer_state_dict": {"state": {}}, "loss": 0.4},
    "model": lambda sd: {"model": sd, "epoch": 1},
    "net": lambda sd: {"net": sd, "acc": 91.2, "epoch": 40},
    "dataparallel": lambda sd: {f"module.{k}": v for k, v in sd.items()},
    "compiled": lambda sd: {f"_orig_mod.{k}": v for k, v in sd.items()},
    "ddp+compiled-wrapped": lambda sd: {"state_dict": {f"module._orig_mod.{k}": v for k, v in sd.items()}},
}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_state_dict_formats(fmt, reference, tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save(FORMATS[fmt](reference.state_dict()), path)
    ckpt = load_checkpoint(path)
    _same_weights(ckpt.state_dict, reference)
    assert ckpt.module is None


def test_safetensors_file_exports_with_its_labels(reference, tmp_path, cli):
    """Weights saved with safetensors (HF-style), labels in its string metadata, DataParallel keys."""
    import onnxruntime as ort
    from safetensors.torch import save_file

    classes = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
    path = tmp_path / "weights.safetensors"
    state = {f"module.{k}": v.contiguous() for k, v in reference.state_dict().items()}
    save_file(state, str(path), metadata={"classes": json.dumps(classes), "epoch": "12", "state_dict": "v2"})
    ckpt = load_checkpoint(path)
    assert ckpt.format == "safetensors" and ckpt.labels == classes and ckpt.info["epoch"] == 12
    _same_weights(ckpt.state_dict, reference)

    out = tmp_path / "weights.onnx"
    summary = json.loads(cli.ok("export", path, "-o", out, "--json").stdout)
    assert summary["verification"]["passed"]
    x = np.random.default_rng(1).standard_normal((2, 3, 224, 224), dtype=np.float32)
    got = ort.InferenceSession(str(out)).run(None, {"input": x})[0]
    with torch.no_grad():
        want = reference(torch.from_numpy(x)).numpy()
    assert np.abs(got - want).max() / np.abs(want).max() <= 1e-4
    assert json.loads(cli.ok("inspect", out, "--json").stdout)["labels"] == classes


def test_truncated_safetensors_is_a_clear_error(reference, tmp_path, cli):
    from safetensors.torch import save_file

    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    data = path.read_bytes()
    for cut in (len(data) // 2, 20):  # tensor data cut short; the JSON header itself cut short
        path.write_bytes(data[:cut])
        result = cli.fails(2, "export", path, "-o", tmp_path / "w.onnx")
        assert "not a readable safetensors file" in result.stderr, result.stderr
        assert not (tmp_path / "w.onnx").exists()


def test_safetensors_without_the_package_says_how_to_install_it(reference, tmp_path, monkeypatch):
    from safetensors.torch import save_file

    from alexnet_deploy.errors import DependencyError

    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    for name in ("safetensors", "safetensors.torch"):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import safetensors` raise ImportError
    with pytest.raises(DependencyError) as info:
        load_checkpoint(path)
    assert "alexnet-deploy[safetensors]" in info.value.fix


def test_legacy_non_zip_format(reference, tmp_path):
    path = tmp_path / "legacy.pth"
    torch.save(reference.state_dict(), path, _use_new_zipfile_serialization=False)
    _same_weights(load_checkpoint(path).state_dict, reference)


def test_labels_and_info_are_read_from_the_wrapper(reference, tmp_path):
    path = tmp_path / "ckpt.pth"
    classes = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
    torch.save({"state_dict": reference.state_dict(), "class_to_idx": {c: i for i, c in enumerate(classes)}, "epoch": 4}, path)
    ckpt = load_checkpoint(path)
    assert ckpt.labels == classes and ckpt.info["epoch"] == 4


def test_torchscript_archive(reference, tmp_path, cli):
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(reference), str(path))
    ckpt = load_checkpoint(path)
    assert ckpt.format == "torchscript"
    _same_weights(ckpt.state_dict, reference)
    out = tmp_path / "scripted.onnx"
    summary = json.loads(cli.ok("export", path, "-o", out, "--json").stdout)
    assert summary["layout"] == "half-width" and summary["verification"]["passed"]


WHOLE_MODEL_SCRIPT = """
import sys, torch
sys.path.insert(0, {tests!r})
from seed_models import alive
import seed_models
class AlexNet(seed_models.Seed003AlexNet):
    pass
model = alive(AlexNet(num_classes=5), 7)
torch.save(model, {path!r})
"""


@pytest.fixture(scope="module")
def pickled_from_main(tmp_path_factory):
    """A whole nn.Module saved from a training script's __main__, as tutorials do."""
    folder = tmp_path_factory.mktemp("pickled")
    path = folder / "whole.pth"
    script = WHOLE_MODEL_SCRIPT.format(tests=str(Path(__file__).parent), path=str(path))
    subprocess.run([sys.executable, "-c", script], check=True)
    model_file = folder / "model.py"
    model_file.write_text("import sys\nsys.path.insert(0, %r)\nimport seed_models\nclass AlexNet(seed_models.Seed003AlexNet):\n    pass\n" % str(Path(__file__).parent))
    return path, model_file


def test_pickled_module_needs_opt_in(pickled_from_main, cli, tmp_path):
    path, _ = pickled_from_main
    result = cli.fails(2, "export", path, "-o", tmp_path / "out.onnx")
    assert "--trust-code" in result.stderr
    assert not (tmp_path / "out.onnx").exists()


def test_pickled_module_from_main_with_its_class(pickled_from_main, reference, tmp_path, cli):
    path, model_file = pickled_from_main
    missing = cli.fails(2, "export", path, "--trust-pickle", "-o", tmp_path / "a.onnx")
    assert "--model" in missing.stderr
    ckpt = load_checkpoint(path, trust_pickle=True, extra_classes={"AlexNet": __import__("seed_models").Seed003AlexNet})
    assert ckpt.format == "pickled-module"
    _same_weights(ckpt.state_dict, reference)
    out = tmp_path / "b.onnx"
    cli.ok("export", path, "--trust-pickle", "--model", f"{model_file}:AlexNet", "-o", out)
    assert out.stat().st_size > 0


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("trust", [False, True])
def test_malicious_pickle_never_runs(tmp_path, cli, trust):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "payload": _Evil(marker)}, path)
    args = ["export", path, "-o", tmp_path / "x.onnx"] + (["--trust-pickle"] if trust else [])
    result = cli.fails(2, *args)
    assert not marker.exists()
    assert "refusing" in result.stderr or "--trust-pickle" in result.stderr
    if trust:
        assert "malicious" in result.stderr
    with pytest.raises(CheckpointError):
        load_checkpoint(path, trust_pickle=trust)
    assert not marker.exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device to save GPU tensors")
def test_gpu_tensors_load_on_cpu(reference, tmp_path):
    path = tmp_path / "gpu.pth"
    torch.save({k: v.cuda() for k, v in reference.state_dict().items()}, path)
    ckpt = load_checkpoint(path)
    assert all(v.device.type == "cpu" for v in ckpt.state_dict.values())
    _same_weights(ckpt.state_dict, reference)


def test_every_format_exports_to_the_same_logits(reference, tmp_path, cli):
    """One export per format would be slow; the loaded weights are equal, so one export proves parity."""
    import onnxruntime as ort

    path = tmp_path / "w.pth"
    torch.save(FORMATS["ddp+compiled-wrapped"](reference.state_dict()), path)
    out = tmp_path / "w.onnx"
    cli.ok("export", path, "-o", out, "--no-verify")
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224), dtype=np.float32)
    got = ort.InferenceSession(str(out)).run(None, {"input": x})[0]
    with torch.no_grad():
        want = reference(torch.from_numpy(x)).numpy()
    assert np.abs(got - want).max() / np.abs(want).max() <= 1e-4


def test_pickled_module_saved_after_from_model_import(tmp_path, cli, reference):
    """Tutorials keep the class in model.py and `from model import AlexNet` in train.py."""
    (tmp_path / "model.py").write_text(
        "import sys\nsys.path.insert(0, %r)\nimport seed_models\nclass AlexNet(seed_models.Seed003AlexNet):\n    pass\n" % str(Path(__file__).parent)
    )
    (tmp_path / "train.py").write_text(
        "import sys, torch\nsys.path.insert(0, %r)\nfrom model import AlexNet\nfrom seed_models import alive\n"
        "torch.save(alive(AlexNet(num_classes=5), 7), 'whole.pth')\n" % str(Path(__file__).parent)
    )
    subprocess.run([sys.executable, "train.py"], cwd=tmp_path, check=True)
    out = tmp_path / "whole.onnx"
    summary = json.loads(cli.ok("export", tmp_path / "whole.pth", "--trust-pickle", "--model", f"{tmp_path / 'model.py'}:AlexNet", "-o", out, "--json").stdout)
    assert summary["verification"]["passed"] and summary["checkpoint"]["format"] == "pickled-module"
