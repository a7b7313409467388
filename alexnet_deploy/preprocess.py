"""Images to model input, exactly as torchvision's Resize/CenterCrop/ToTensor/Normalize do it.

Torch-free (PIL + numpy), so ``Classifier`` and the onnxruntime side use it without
torch. Equality with torchvision on the same PIL image is tested (max difference 1e-6).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from alexnet_deploy.errors import InputError
from alexnet_deploy.record import Preprocessing

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

_PIL_INTERPOLATION = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}


def _resized_size(width: int, height: int, spec: Preprocessing) -> tuple[int, int]:
    if spec.resize_mode == "exact":
        return spec.resize, spec.resize
    # torchvision: the shorter side becomes `resize`, the longer one int(resize * long / short).
    if width <= height:
        return spec.resize, int(spec.resize * height / width)
    return int(spec.resize * width / height), spec.resize


def _center_crop(image: Image.Image, size: int) -> Image.Image:
    width, height = image.size
    if size > width or size > height:
        # torchvision pads with zeros when the crop is larger than the image.
        padded = Image.new(image.mode, (max(width, size), max(height, size)))
        left = (max(width, size) - width) // 2
        top = (max(height, size) - height) // 2
        padded.paste(image, (left, top))
        image, (width, height) = padded, padded.size
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def to_rgb_image(source) -> Image.Image:
    """A PIL RGB image from a path, a PIL image or an HxWx3 uint8 array."""
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    if isinstance(source, np.ndarray):
        if source.ndim != 3 or source.shape[2] != 3 or source.dtype != np.uint8:
            raise InputError(
                f"image array must be HxWx3 uint8 (RGB), got shape {source.shape} dtype {source.dtype}.",
                "convert it, e.g. np.asarray(pil_image.convert('RGB'))",
            )
        return Image.fromarray(source, "RGB")
    path = Path(source)
    if not path.is_file():
        raise InputError(f"image {path} does not exist or is not a file.", "check the path")
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"image {path} cannot be decoded ({type(exc).__name__}).", "remove or replace the file") from None


def preprocess_image(source, spec: Preprocessing) -> np.ndarray:
    """One image -> float32 CHW array, equal to torchvision's transforms for ``spec``."""
    image = to_rgb_image(source)
    image = image.resize(_resized_size(*image.size, spec), _PIL_INTERPOLATION[spec.interpolation])
    image = _center_crop(image, spec.crop)
    array = np.asarray(image, dtype=np.float32) / np.float32(255.0)
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    return np.ascontiguousarray(((array - mean) / std).transpose(2, 0, 1))


def preprocess_batch(sources: Sequence, spec: Preprocessing) -> np.ndarray:
    """Several images -> float32 NCHW array."""
    return np.stack([preprocess_image(s, spec) for s in sources])


def list_images(folder: Path, recursive: bool = True) -> list[Path]:
    """Image files under ``folder`` (by suffix), sorted; InputError if the folder is missing."""
    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"image folder {folder} does not exist.", "check the path")
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder of images.", "give a directory")
    pattern: Iterable[Path] = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in pattern if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_images(paths: Sequence[Path], spec: Preprocessing, advance=None) -> tuple[np.ndarray, list[Path], list[Path]]:
    """Preprocess every decodable image; return (batch, used paths, skipped undecodable paths).

    ``advance(1)`` is called after each file when given (for progress bars).
    """
    arrays, used, skipped = [], [], []
    for path in paths:
        try:
            arrays.append(preprocess_image(path, spec))
            used.append(path)
        except InputError:
            skipped.append(path)
        if advance is not None:
            advance(1)
    batch = np.stack(arrays) if arrays else np.zeros((0, 3, spec.crop, spec.crop), np.float32)
    return batch, used, skipped
