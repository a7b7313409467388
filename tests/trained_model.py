"""A genuinely trained AlexNet for the precision and eval tests, cached between sessions.

The images and the training are ``alexnet_deploy.checkpoints.demo_shapes`` (what
``alexnet quickstart`` trains too): five drawn pattern classes, torchvision's own AlexNet at
a 64-pixel input with torchvision's own transforms. Accuracy then means something:
quantization error shows up as flipped predictions.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


from alexnet_deploy.checkpoints import demo_shapes
from alexnet_deploy.checkpoints.demo_shapes import CLASSES, CROP, IMAGE_SIZE, MEAN, RESIZE, STD, draw_image, train, transforms, write_image_folder  # noqa: F401

# (folder, images per class, seed) of the cached image sets.
IMAGE_SETS = (("train", 200, 1), ("calib", 30, 2), ("val", 80, 3))
STAMP = "stamp.json"  # written last: its presence marks a complete cache


def cache_key() -> str:
    """What the cached weights depend on: this file, the drawing and training code, and torch's version."""
    import hashlib

    import torch

    code = Path(__file__).read_bytes() + Path(demo_shapes.__file__).read_bytes()
    return hashlib.sha256(code + torch.__version__.encode()).hexdigest()[:16]


def _lock(root: Path):
    # filelock comes with torch; one lock per cache folder serializes pytest-xdist workers and the background builder.
    from filelock import FileLock

    return FileLock(str(root / ".lock"))


def build(root: Path) -> dict:
    """Draw the image folders under ``root``, train, save ``model.pth``; the stamp is written last."""
    import torch

    for name, per_class, seed in IMAGE_SETS:
        write_image_folder(root / name, per_class, seed)
    model, seconds, train_acc = train(root / "train")
    torch.save({"model_state_dict": model.state_dict(), "classes": list(CLASSES)}, root / "model.pth")
    info = {"train_seconds": seconds, "train_accuracy": train_acc}
    (root / STAMP).write_text(json.dumps(info))
    return info


def ensure(root: Path) -> dict:
    """The cache under ``root``, built here unless complete; waits while another process builds it."""
    root.mkdir(parents=True, exist_ok=True)
    with _lock(root):
        if not (root / STAMP).exists():
            return build(root)
    return json.loads((root / STAMP).read_text())


def start_background_build(root: Path) -> subprocess.Popen | None:
    """Start building the cache in a child process, so training overlaps the tests that do not need it.

    Returns None when the cache is already complete. ``ensure`` still guards every use: it
    waits for the child, or builds the cache itself if the child died or never got the lock.
    """
    if (root / STAMP).exists():
        return None
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "build.log", "wb") as log:  # the child writes to its own copy of the descriptor
        return subprocess.Popen([sys.executable, __file__, str(root)], stdout=log, stderr=subprocess.STDOUT, cwd=str(Path(__file__).parent))


if __name__ == "__main__":  # the background builder: gives way when another process holds the lock
    from filelock import Timeout

    target = Path(sys.argv[1])
    try:
        with _lock(target).acquire(timeout=0):
            if not (target / STAMP).exists():
                build(target)
    except Timeout:
        pass
