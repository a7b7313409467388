"""A small AlexNet trained here, on drawn images: the model ``alexnet quickstart`` optimizes.

Five pattern classes (checker, disc, horizontal stripes, ring, vertical stripes) are drawn
with random colours, contrast, phase, backgrounds and noise, written as an ImageFolder, and
torchvision's own AlexNet class is trained on them at a 64-pixel input with torchvision's own
transforms. Accuracy then means something (a trained model still errs on the hard images),
so quantization error shows up as flipped predictions. The test suite trains the same way.
"""

from __future__ import annotations

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
    """An ImageFolder (one sub-folder per class) of ``per_class`` PNG images per class, drawn from ``seed``."""
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


def train(folder: Path, seed: int = 0, epochs: int = 5, lr: float = 0.006, progress=None):
    """Train torchvision's AlexNet (5 classes) on ``folder``; returns (model, seconds, last-epoch train accuracy).

    SGD with Nesterov momentum, linear learning-rate decay and gradient clipping; He
    initialisation for the convolutions and a small last layer, which is what makes a
    BatchNorm-free AlexNet train in a few epochs. Always all ``epochs`` (a model whose quality
    depended on how busy the machine was would make results vary). ``progress`` (a Progress)
    counts the steps.
    """
    import torch
    import torchvision

    from alexnet_deploy.progress import as_progress

    progress = as_progress(progress)
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
    # fused: one pass over the 61M parameters per step. The default per-tensor Nesterov update
    # allocates a new 245 MB gradient copy every step; it took 0.105 s a step against fused 0.026 s
    # on 2 cores, a third of the training time (same update, rounded differently by up to 4e-9).
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, fused=True)
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = -(-len(images) // 32)
    progress.start(f"training AlexNet on {len(images)} images, {epochs} epochs", epochs * steps_per_epoch)
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
            progress.advance(1)
        accuracy = correct / len(images)
    model.eval()
    return model, time.perf_counter() - start, accuracy


def save_trained(model, path: Path) -> Path:
    """Save ``model``'s state_dict with its class names, the way training scripts do (atomically; the same weights give the same bytes)."""
    from alexnet_deploy.checkpoints.demo import save_checkpoint

    return save_checkpoint(Path(path), {"model_state_dict": model.state_dict(), "classes": list(CLASSES)})
