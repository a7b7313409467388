"""Material for ``alexnet quickstart``: a seeded checkpoint in a seed layout, labels, sample images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
DEMO_LAYOUT = "paper-hand-lrn"


def make_demo_checkpoint(path: Path, seed: int = 0) -> Path:
    """Save a seed-001-layout (hand-written LRN) AlexNet with 10 CIFAR-10 classes the way its tutorial wraps it.

    Weights are Kaiming-initialised from ``seed`` so activations stay alive through every
    layer (a parity check on a dead network would prove nothing).
    """
    import torch

    from alexnet_deploy.checkpoints.layouts import LAYOUTS

    torch.manual_seed(seed)
    model = LAYOUTS[DEMO_LAYOUT].build(len(CIFAR10))
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            torch.nn.init.normal_(module.bias, std=0.01)
    payload = {"model_state_dict": model.state_dict(), "epoch": 0, "classes": list(CIFAR10), "note": "alexnet quickstart demo weights (untrained)"}
    return save_checkpoint(Path(path), payload)


def save_checkpoint(path: Path, payload) -> Path:
    """torch.save ``payload`` to ``path`` atomically, the same bytes for the same payload.

    torch.save names the archive's inner folder after the file it writes to: saving straight
    to a temporary name would make every save differ, so a rerun's content-keyed caches
    (optimize's stages) would never resume. The archive is built in memory, named for ``path``.
    """
    import io

    import torch

    from alexnet_deploy.fileio import atomic_write_bytes

    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)


def make_sample_images(folder: Path, count: int = 6, seed: int = 0) -> list[Path]:
    """Write ``count`` synthetic RGB images (gradients and shapes, varied sizes) as PNG/JPEG."""
    from alexnet_deploy.datasets import synthetic_image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        image = synthetic_image(rng)
        path = folder / (f"sample_{i}.png" if i % 2 == 0 else f"sample_{i}.jpg")
        image.save(path)
        paths.append(path)
    return paths
