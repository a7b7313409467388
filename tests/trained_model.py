"""A genuinely trained AlexNet for the precision and eval tests.

Images are drawn procedurally (five pattern classes with random colours, contrast, phase,
backgrounds and noise), written as an ImageFolder, and torchvision's own
AlexNet class is trained on them at a 64-pixel input with torchvision's own transforms.
Accuracy then means something: quantization error shows up as flipped predictions.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CLASSES = ("checker", "disc", "hstripes", "ring", "vstripes")  # sorted, as ImageFolder orders them
IMAGE_SIZE = 80
RESIZE, CROP = 72, 64
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def draw_image(label: str, rng: np.random.Generator):
    """One RGB PIL image of class ``label``: a pattern in one colour on a shaded background, plus noise.

    Contrast and noise vary widely, so some images are hard and a trained model still errs.
    """
    from PIL import Image, ImageDraw

    size = IMAGE_SIZE
    background = rng.uniform(40, 215, 3)
    ramp = np.linspace(-1, 1, size)[None, :, None] * rng.uniform(-40, 40, 3)
    image = Image.fromarray(np.clip(np.broadcast_to(background + ramp, (size, size, 3)), 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    contrast = rng.uniform(25, 120, 3) * np.where(background > 127, -1, 1)
    fill = tuple(int(v) for v in np.clip(background + contrast, 0, 255))
    period = int(rng.integers(8, 16))
    phase = int(rng.integers(0, period))
    if label in ("hstripes", "vstripes"):
        for offset in range(phase - period, size, period):
            box = (0, offset, size, offset + period // 2) if label == "hstripes" else (offset, 0, offset + period // 2, size)
            draw.rectangle(box, fill=fill)
    elif label == "checker":
        for y in range(phase - period, size, period):
            for x in range(phase - period, size, period):
                if ((x - phase) // period + (y - phase) // period) % 2 == 0:
                    draw.rectangle((x, y, x + period - 1, y + period - 1), fill=fill)
    else:
        radius = rng.uniform(0.22, 0.4) * size
        cx, cy = rng.uniform(radius, size - radius, 2)
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=fill)
        if label == "ring":
            inner = radius * rng.uniform(0.45, 0.7)
            draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=tuple(int(v) for v in np.clip(background, 0, 255)))
    array = np.asarray(image, dtype=np.float32) + rng.normal(0, rng.uniform(5, 45), (size, size, 3))
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), "RGB")


def write_image_folder(root: Path, per_class: int, seed: int) -> Path:
    """An ImageFolder (one sub-folder per class) of PNG images."""
    rng = np.random.default_rng(seed)
    for label in CLASSES:
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            draw_image(label, rng).save(root / label / f"{label}_{i:04d}.png")
    return root


def transforms():
    """torchvision's own preprocessing for this model (the reference the toolkit must match)."""
    from torchvision import transforms as T

    return T.Compose([T.Resize(RESIZE), T.CenterCrop(CROP), T.ToTensor(), T.Normalize(MEAN, STD)])


def train(folder: Path, seed: int = 0, epochs: int = 5, lr: float = 0.006):
    """Train torchvision's AlexNet (5 classes) on ``folder``; returns (model, seconds, last-epoch train accuracy).

    SGD with Nesterov momentum, linear learning-rate decay and gradient clipping; He
    initialisation for the convolutions and a small last layer, which is what makes a
    BatchNorm-free AlexNet train in a few epochs. Always all ``epochs``: a model whose quality
    depended on how busy the machine was would make the precision tests flaky.
    """
    import torch
    import torchvision

    torch.manual_seed(seed)
    dataset = torchvision.datasets.ImageFolder(str(folder), transform=transforms())
    assert tuple(dataset.classes) == CLASSES
    images = torch.stack([img for img, _ in dataset])
    targets = torch.tensor(dataset.targets)
    # torchvision's class; dropout only acts in training, so the saved state_dict is the usual one.
    model = torchvision.models.alexnet(weights=None, num_classes=len(CLASSES), dropout=0.0)
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            torch.nn.init.zeros_(module.bias)
        elif isinstance(module, torch.nn.Linear):
            torch.nn.init.xavier_uniform_(module.weight)
            torch.nn.init.zeros_(module.bias)
    torch.nn.init.normal_(model.classifier[-1].weight, std=0.01)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    accuracy = 0.0
    for epoch in range(epochs):
        for group in optimizer.param_groups:
            group["lr"] = lr * (1 - epoch / epochs)
        model.train()
        correct = 0
        for batch in torch.randperm(len(images), generator=generator).split(32):
            logits = model(images[batch])
            loss = torch.nn.functional.cross_entropy(logits, targets[batch])
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            correct += int((logits.argmax(1) == targets[batch]).sum())
        accuracy = correct / len(images)
    model.eval()
    return model, time.perf_counter() - start, accuracy


# (folder, images per class, seed) of the cached image sets.
IMAGE_SETS = (("train", 200, 1), ("calib", 30, 2), ("val", 80, 3))
STAMP = "stamp.json"  # written last: its presence marks a complete cache


def cache_key() -> str:
    """What the cached weights depend on: this file (images and training) and torch's version."""
    import hashlib

    import torch

    return hashlib.sha256(Path(__file__).read_bytes() + torch.__version__.encode()).hexdigest()[:16]


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
