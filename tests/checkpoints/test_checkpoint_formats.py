"""Every way people save checkpoints loads to the same weights; unsafe pickles never run."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from alexnet_deploy.errors import CheckpointError
from alexnet_deploy.checkpoints.load import load_checkpoint
from alexnet_deploy.checkpoints.pickles import REFUSED_HOW
from seed_models import Seed000AlexNet, Seed003AlexNet, alive


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
    script = WHOLE_MODEL_SCRIPT.format(tests=str(Path(__file__).resolve().parents[1]), path=str(path))
    subprocess.run([sys.executable, "-c", script], check=True)
    model_file = folder / "model.py"
    model_file.write_text("import sys\nsys.path.insert(0, %r)\nimport seed_models\nclass AlexNet(seed_models.Seed003AlexNet):\n    pass\n" % str(Path(__file__).resolve().parents[1]))
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


@pytest.mark.slow  # seconds each: a subprocess, a Ray instance or a full-size export
def test_pickled_module_saved_after_from_model_import(tmp_path, cli, reference):
    """Tutorials keep the class in model.py and `from model import AlexNet` in train.py."""
    (tmp_path / "model.py").write_text(
        "import sys\nsys.path.insert(0, %r)\nimport seed_models\nclass AlexNet(seed_models.Seed003AlexNet):\n    pass\n" % str(Path(__file__).resolve().parents[1])
    )
    (tmp_path / "train.py").write_text(
        "import sys, torch\nsys.path.insert(0, %r)\nfrom model import AlexNet\nfrom seed_models import alive\n"
        "torch.save(alive(AlexNet(num_classes=5), 7), 'whole.pth')\n" % str(Path(__file__).resolve().parents[1])
    )
    subprocess.run([sys.executable, "train.py"], cwd=tmp_path, check=True)
    out = tmp_path / "whole.onnx"
    summary = json.loads(cli.ok("export", tmp_path / "whole.pth", "--trust-pickle", "--model", f"{tmp_path / 'model.py'}:AlexNet", "-o", out, "--json").stdout)
    assert summary["verification"]["passed"] and summary["checkpoint"]["format"] == "pickled-module"


# ---- Files that try to run code: refused by name, with and without trust -------------------------
# Each payload is hand-assembled pickle opcodes, so the test depends on no library's pickler.

def _text(value: str) -> bytes:  # BINUNICODE
    data = value.encode()
    return b"X" + len(data).to_bytes(4, "little") + data


def _global(module: str, name: str) -> bytes:  # GLOBAL; dotted names resolve under protocol 4
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _call(function: bytes, *args: bytes) -> bytes:  # MARK args TUPLE REDUCE
    return function + b"(" + b"".join(args) + b"tR"


def _pickle(body: bytes) -> bytes:
    return b"\x80\x04" + body + b"."


def _system(marker: Path) -> bytes:
    return _call(_global("os", "system"), _text(f"touch {marker}"))


def _torch_zip(data_pkl: bytes, decoy: bytes | None = None) -> bytes:
    """A torch.save zip whose data.pkl is ``data_pkl``; ``decoy`` comes first as another *data.pkl."""
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buffer)
    source = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        if decoy is not None:
            archive.writestr("archive/decoy/data.pkl", decoy)
        for info in source.infolist():
            archive.writestr(info.filename, data_pkl if info.filename.endswith("/data.pkl") else source.read(info))
    return out.getvalue()


def _legacy(first: bytes, payload: bytes) -> bytes:
    """Pre-1.6 layout: magic number, protocol, sys_info, then the object; here the first hides a global."""
    info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    return first + pickle.dumps(1001, 2) + pickle.dumps(info, 2) + payload


MAGIC = "119547037146038801333356"  # torch's legacy magic number, here built by calling builtins.int

PAYLOADS = {  # name -> (file bytes from the marker path, a global the refusal must name)
    "torch-os.system": (lambda m: _pickle(_call(_global("torch", "os.system"), _text(f"touch {m}"))), "torch.os.system"),
    "stack-global-memo": (lambda m: _pickle(
        _text("os") + b"\x94" + b"0" + _text("system") + b"\x94" + b"0"  # memoized, then popped
        + _text("collections") + b"0" + _text("OrderedDict") + b"0"  # what a last-two-strings scan sees
        + b"h\x00h\x01\x93" + b"(" + _text(f"touch {m}") + b"tR"), "os.system"),
    "timeit": (lambda m: _pickle(_call(_global("timeit", "timeit"), _text("pass"), _text(f"open({str(m)!r}, 'w').close()"))), "timeit.timeit"),
    "nested-_pickle.loads": (lambda m: _pickle(_call(_global("_pickle", "loads"), b"B" + len(_pickle(_system(m))).to_bytes(4, "little") + _pickle(_system(m)))), "_pickle.loads"),
    "methodcaller-torch.os": (lambda m: _pickle(_call(_call(_global("operator", "methodcaller"), _text("system"), _text(f"touch {m}")), _global("torch", "os"))), "operator.methodcaller"),
    "attrgetter-torch.os": (lambda m: _pickle(_call(_call(_call(_global("operator", "attrgetter"), _text("system")), _global("torch", "os")), _text(f"touch {m}"))), "operator.attrgetter"),
    "functools.partial": (lambda m: _pickle(_call(_call(_global("functools", "partial"), _global("torch", "os.system"), _text(f"touch {m}")))), "functools.partial"),
    "zip-decoy-data.pkl": (lambda m: _torch_zip(_pickle(_system(m)), decoy=_pickle(_call(_global("__main__", "Net"))) ), "os.system"),
    "legacy-harmless-first": (lambda m: _legacy(_pickle(_call(_global("builtins", "int"), _text(MAGIC))), _pickle(_system(m))), "os.system"),
}


@pytest.mark.parametrize("trust", [False, True], ids=["default", "trust-code"])
@pytest.mark.parametrize("payload", list(PAYLOADS))
def test_code_running_pickles_are_refused_by_name(payload, trust, tmp_path, cli):
    marker = tmp_path / "pwned"
    make, name = PAYLOADS[payload]
    path = tmp_path / "evil.pth"
    path.write_bytes(make(marker))
    for command in (["inspect", path], ["export", path, "-o", tmp_path / "x.onnx"]):
        result = cli.fails(2, *command, *(["--trust-code"] if trust else []))
        assert not marker.exists(), f"{payload} ran code during {command[0]}"
        assert "refusing" in result.stderr and name in result.stderr, result.stderr
        assert REFUSED_HOW in result.stderr and "add --trust-code" not in result.stderr
    assert not (tmp_path / "x.onnx").exists()
    result = cli.fails(2, "inspect", path, "--trust-pickle")  # the old flag name still works, with the same refusal
    assert name in result.stderr and not marker.exists()


class _WritesOnLoad(torch.nn.Module):
    """A scripted module whose __setstate__ writes a file: what torch.jit.load runs."""

    def __init__(self, marker: str):
        super().__init__()
        self.marker = marker

    def forward(self, x):
        return x

    @torch.jit.export
    def __getstate__(self):
        return (self.marker, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]):
        self.marker = state[0]
        self.training = state[1]
        torch.save(torch.zeros(1), state[0])


class _TrojanAlexNet(Seed003AlexNet):
    def __init__(self, marker: str):
        super().__init__(num_classes=5)
        self.hook = _WritesOnLoad(marker)


def _ort_logits(onnx_path: Path, size: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    import onnxruntime as ort

    x = np.random.default_rng(seed).standard_normal((2, 3, size, size), dtype=np.float32)
    return x, ort.InferenceSession(str(onnx_path)).run(None, {"input": x})[0]


def test_torchscript_code_never_runs_without_trust(reference, tmp_path, cli):
    marker = tmp_path / "pwned"
    model = _TrojanAlexNet(str(marker))
    model.load_state_dict(reference.state_dict(), strict=False)
    model.eval()
    path = tmp_path / "trojan.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    assert not marker.exists()

    report = json.loads(cli.ok("inspect", path, "--json").stdout)
    assert not marker.exists(), "inspect ran the archive's __setstate__"
    assert report["format"] == "torchscript" and report["layout"] == "half-width"

    out = tmp_path / "trojan.onnx"
    summary = json.loads(cli.ok("export", path, "-o", out, "--no-verify", "--json").stdout)
    assert not marker.exists(), "export ran the archive's __setstate__"
    # The weights were still read: the export computes what the seed class computes.
    x, got = _ort_logits(out, 224)
    with torch.no_grad():
        want = reference(torch.from_numpy(x)).numpy()
    assert np.abs(got - want).max() / np.abs(want).max() <= 1e-4
    # And the recorded sha256 is that of the file's bytes, in the summary and in the ONNX metadata.
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert summary["checkpoint"]["sha256"] == digest
    assert json.loads(cli.ok("inspect", out, "--json").stdout)["source_sha256"] == digest


@pytest.mark.slow  # seconds each: a subprocess, a Ray instance or a full-size export
def test_trusted_torchscript_seed000_layout_decided_by_its_forward(tmp_path, cli):
    model = alive(Seed000AlexNet(num_classes=10), 0).eval()
    path = tmp_path / "seed000.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    refused = cli.fails(2, "export", path, "-o", tmp_path / "a.onnx")  # weights alone fit two layouts
    assert "--arch" in refused.stderr
    out = tmp_path / "seed000.onnx"
    summary = json.loads(cli.ok("export", path, "--trust-code", "-o", out, "--no-verify", "--json").stdout)
    assert summary["layout"] == "caffe-227" and summary["input_size"] == 227
    x, got = _ort_logits(out, 227)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    assert np.abs(got - want).max() / np.abs(want).max() <= 1e-4


@pytest.mark.slow  # seconds each: a subprocess, a Ray instance or a full-size export
def test_legacy_pickled_module_loads_with_trust(tmp_path, cli, reference):
    """torch.save(model, f, _use_new_zipfile_serialization=False) from a training script's __main__."""
    path = tmp_path / "legacy_whole.pth"
    script = WHOLE_MODEL_SCRIPT.format(tests=str(Path(__file__).resolve().parents[1]), path=str(path)).replace(
        f"torch.save(model, {str(path)!r})", f"torch.save(model, {str(path)!r}, _use_new_zipfile_serialization=False)"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    assert not zipfile.is_zipfile(path)
    model_file = tmp_path / "model.py"
    model_file.write_text("import sys\nsys.path.insert(0, %r)\nimport seed_models\nclass AlexNet(seed_models.Seed003AlexNet):\n    pass\n" % str(Path(__file__).resolve().parents[1]))
    untrusted = cli.fails(2, "export", path, "--model", f"{model_file}:AlexNet", "-o", tmp_path / "a.onnx")
    assert "--trust-code" in untrusted.stderr
    out = tmp_path / "legacy.onnx"
    summary = json.loads(cli.ok("export", path, "--trust-code", "--model", f"{model_file}:AlexNet", "-o", out, "--json").stdout)
    assert summary["checkpoint"]["format"] == "pickled-module" and summary["verification"]["passed"]
    x, got = _ort_logits(out, 224)
    with torch.no_grad():
        want = reference(torch.from_numpy(x)).numpy()
    assert np.abs(got - want).max() / np.abs(want).max() <= 1e-4


def test_the_hashed_bytes_are_the_loaded_bytes(reference, tmp_path, monkeypatch):
    """A file replaced after it was hashed must not change the weights: one read serves both."""
    path = tmp_path / "ckpt.pth"
    torch.save(reference.state_dict(), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    other = alive(Seed003AlexNet(num_classes=5), 8)
    real_load = torch.load

    def swap_then_load(*args, **kwargs):  # another process rewrites the file between reads
        torch.save(other.state_dict(), path)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", swap_then_load)
    ckpt = load_checkpoint(path)
    assert ckpt.sha256 == digest
    _same_weights(ckpt.state_dict, reference)


def test_numpy_metrics_beside_the_weights_load_without_trust(reference, tmp_path):
    """Training scripts store metrics as numpy scalars; those are data, not code."""
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": reference.state_dict(), "best_acc": np.float64(0.91), "history": np.arange(3.0), "epoch": 7}, path)
    ckpt = load_checkpoint(path)
    _same_weights(ckpt.state_dict, reference)
    assert ckpt.info["epoch"] == 7 and ckpt.module is None


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "pre-1.6"])
def test_whole_torchvision_module_loads_only_with_trust(tmp_path, legacy):
    """torch and torchvision nn.Module classes need no --model; they still need --trust-code."""
    from torchvision.ops import MLP

    torch.manual_seed(0)
    model = MLP(4, [8, 3]).eval()
    path = tmp_path / "mlp.pth"
    torch.save(model, path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert "--trust-code" in info.value.fix
    ckpt = load_checkpoint(path, trust_code=True)
    assert type(ckpt.module) is MLP and ckpt.format == "pickled-module"
    x = torch.randn(2, 4)
    with torch.no_grad():
        assert torch.equal(ckpt.module(x), model(x))


def test_hostile_torchscript_archive_is_a_clear_error_without_trust(reference, tmp_path, cli):
    """The restricted reader treats the archive as untrusted: foreign globals and out-of-range tensors."""
    marker = tmp_path / "pwned"
    scripted = tmp_path / "ok.pt"
    torch.jit.save(torch.jit.script(reference), str(scripted))
    source = zipfile.ZipFile(scripted)
    out_of_range = _global("torch._utils", "_rebuild_tensor_v2") + b"(" + b"(" + _text("storage") + _global("torch", "FloatStorage") + _text("0") + _text("cpu") + b"K\x01tQ" + b"K\x00" + b"(J\x00\x00\x00\x10t(K\x01t\x89" + _global("collections", "OrderedDict") + b")RtR"
    for name, data_pkl in {"global": _pickle(_system(marker)), "bounds": _pickle(out_of_range)}.items():
        path = tmp_path / f"{name}.pt"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
            for info in source.infolist():
                archive.writestr(info.filename, data_pkl if info.filename.endswith("/data.pkl") and "constants" not in info.filename else source.read(info))
        result = cli.fails(2, "export", path, "-o", tmp_path / "x.onnx")
        assert "TorchScript archive whose weights cannot be read without running its code" in result.stderr, result.stderr
        assert ("refusing os.system" if name == "global" else "over a storage of") in result.stderr
        assert "--trust-code" in result.stderr and not marker.exists()
