"""Shared fixtures: checkpoints saved from the seeds' own classes, exports made once, a CLI runner."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from seed_models import SEED_CLASSES, alive  # noqa: E402

# One thread each for torch and onnxruntime keeps timings and numerics steady on a 2-core CI box.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


class Cli:
    """Runs ``alexnet`` in-process; ``.ok(...)`` asserts exit 0, ``.fails(code, ...)`` the error exit."""

    def __init__(self):
        from alexnet_deploy.cli import app

        self.app = app
        self.runner = CliRunner()

    def __call__(self, *args):
        return self.runner.invoke(self.app, [str(a) for a in args])

    def ok(self, *args):
        result = self(*args)
        assert result.exit_code == 0, f"exit {result.exit_code}\nstdout:{result.stdout}\nstderr:{result.stderr}\n{result.exception!r}"
        return result

    def fails(self, code: int, *args):
        result = self(*args)
        assert result.exit_code == code, f"exit {result.exit_code} (wanted {code})\nstdout:{result.stdout}\nstderr:{result.stderr}\n{result.exception!r}"
        assert "Traceback" not in result.stdout + result.stderr
        return result


@pytest.fixture(scope="session")
def cli() -> Cli:
    return Cli()


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> Path:
    """A session-wide folder for checkpoints and exports that are slow to make."""
    return tmp_path_factory.mktemp("store")


def seed_model(layout: str, num_classes: int, seed: int = 0):
    factory, size = SEED_CLASSES[layout]
    torch.manual_seed(seed)
    return alive(factory(num_classes), seed), size


@pytest.fixture(scope="session")
def seed_checkpoints(store):
    """layout -> (checkpoint path, the seed class instance it was saved from, input size). Made lazily."""
    cache: dict[str, tuple[Path, torch.nn.Module, int]] = {}

    def get(layout: str, num_classes: int = 10):
        key = f"{layout}-{num_classes}"
        if key not in cache:
            model, size = seed_model(layout, num_classes)
            path = store / f"{key}.pth"
            torch.save(model.state_dict(), path)
            cache[key] = (path, model, size)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def seed_exports(store, seed_checkpoints):
    """layout -> (ONNX path, ``alexnet export --json`` summary) of the 10-class seed checkpoint.

    Made lazily, once per session, by whichever test asks first: tests that need an export
    use this instead of a file another test happens to have written.
    """
    import json

    cache: dict[str, tuple[Path, dict]] = {}

    def get(layout: str):
        if layout not in cache:
            path, _, _ = seed_checkpoints(layout, 10)
            out = store / f"export-{layout}.onnx"
            args = ["export", path, "-o", out, "--json"] + (["--arch", "caffe-227"] if layout == "caffe-227" else [])
            cache[layout] = (out, json.loads(Cli().ok(*args).stdout))
        return cache[layout]

    return get


@pytest.fixture(scope="session")
def half_width(seed_checkpoints):
    """The smallest seed layout (seed 003, 5 classes): used wherever any AlexNet will do."""
    return seed_checkpoints("half-width", 5)


@pytest.fixture(scope="session")
def half_width_onnx(store, half_width, cli):
    """half_width exported once through the CLI, with labels."""
    path, model, _ = half_width
    labels = store / "class_indices.json"
    labels.write_text('{"0": "daisy", "1": "dandelion", "2": "roses", "3": "sunflowers", "4": "tulips"}')
    out = store / "half.onnx"
    cli.ok("export", path, "-o", out, "--labels", labels)
    return out


@pytest.fixture(scope="session")
def trained(request, tmp_path_factory):
    """A torchvision AlexNet trained here on procedural images, its FP32 export, and image folders.

    The image folders and trained weights are cached in pytest's cache directory (keyed
    by the generator/training code and torch version) because training takes a minute or
    two on a 2-core machine. The ONNX export is made fresh in every session by the code
    under test: a cached export would hide an exporter regression.
    """
    import hashlib
    import json

    import trained_model as tm

    key = hashlib.sha256((Path(tm.__file__).read_bytes() + torch.__version__.encode())).hexdigest()[:16]
    cache = getattr(request.config, "cache", None)
    root = Path(cache.mkdir(f"alexnet-trained-weights-{key}")) if cache is not None else tmp_path_factory.mktemp("trained")
    stamp = root / "stamp.json"
    if not stamp.exists():
        for name, per_class, seed in (("train", 200, 1), ("calib", 30, 2), ("val", 80, 3)):
            tm.write_image_folder(root / name, per_class, seed)
        model, seconds, train_acc = tm.train(root / "train")
        torch.save({"model_state_dict": model.state_dict(), "classes": list(tm.CLASSES)}, root / "model.pth")
        stamp.write_text(json.dumps({"train_seconds": seconds, "train_accuracy": train_acc}))  # last: marks the cache complete
    onnx_path = tmp_path_factory.mktemp("trained-export") / "model.onnx"
    Cli().ok(
        "export", root / "model.pth", "-o", onnx_path, "--arch", "torchvision", "--input-size", tm.CROP,
        "--resize", tm.RESIZE, "--crop", tm.CROP, "--mean", ",".join(map(str, tm.MEAN)), "--std", ",".join(map(str, tm.STD)),
    )
    info = json.loads(stamp.read_text())
    return SimpleNamespace(
        root=root, checkpoint=root / "model.pth", onnx=onnx_path,
        train=root / "train", calib=root / "calib", val=root / "val", **info,
    )
