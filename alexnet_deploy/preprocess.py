"""Images to model input, exactly as torchvision's Resize/CenterCrop/ToTensor/Normalize do it.

Torch-free (PIL + numpy), so ``Classifier`` and the onnxruntime side use it without
torch. Equality with torchvision on the same PIL image is tested (max difference 1e-6).
The transform itself lives in :mod:`alexnet_deploy.imaging` (shipped verbatim to Triton);
this module applies a record's :class:`Preprocessing` and speaks the toolkit's errors.

Image folders are listed without leaving them: a link to a file outside the folder, a link
to a folder, and anything that is not a regular file (a FIFO would block the read) are
left out and reported, unless ``follow_links`` is asked for.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from alexnet_deploy import imaging
from alexnet_deploy.errors import InputError
from alexnet_deploy.record import Preprocessing

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
MAX_IMAGE_PIXELS = imaging.MAX_IMAGE_PIXELS
MAX_RESIZED_PIXELS = imaging.MAX_RESIZED_PIXELS


def _describe(source) -> str:
    """How an error names ``source``: 'image PATH', 'image bytes' or 'image'."""
    if isinstance(source, (str, os.PathLike)):
        return f"image {source}"
    return "image bytes" if isinstance(source, (bytes, bytearray, memoryview)) else "image"


class _Missing(imaging.ImageRejected):
    """A path that names no file (deleted since it was listed, or a typo)."""


def _input_error(source, exc: imaging.ImageRejected) -> InputError:
    """The one-line error for an image that cannot be used, with the fix for its kind."""
    fix = "check the path" if isinstance(exc, _Missing) else "remove or replace the file"
    return InputError(f"{_describe(source)}: {exc}.", fix)


def _rgb(source, max_pixels: int, before_load=None) -> Image.Image:
    """to_rgb_image's work; ImageRejected (a short reason) for a file that cannot be used."""
    if isinstance(source, Image.Image):
        return source if source.mode == "RGB" else source.convert("RGB")
    if isinstance(source, np.ndarray):
        if source.ndim != 3 or source.shape[2] != 3 or source.dtype != np.uint8:
            raise InputError(
                f"image array must be HxWx3 uint8 (RGB), got shape {source.shape} dtype {source.dtype}.",
                "convert it, e.g. np.asarray(pil_image.convert('RGB'))",
            )
        return Image.fromarray(source, "RGB")
    if isinstance(source, (str, os.PathLike)) and not Path(source).is_file():
        raise _Missing("does not exist or is not a file")
    return imaging.decode_rgb(source, max_pixels, before_load)


def to_rgb_image(source, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """A PIL RGB image from a path, encoded bytes, a PIL image or an HxWx3 uint8 array.

    InputError (its ``problem`` says why) for a missing file, an undecodable one, or one
    whose header declares more than ``max_pixels`` pixels (checked before decoding).
    """
    try:
        return _rgb(source, max_pixels)
    except imaging.ImageRejected as exc:
        raise _input_error(source, exc) from None


def model_input(source, spec: Preprocessing, out: np.ndarray | None = None, max_pixels: int = MAX_IMAGE_PIXELS, before_load=None) -> np.ndarray:
    """preprocess_image's work; ImageRejected, whose text is the short reason, for an image that cannot be used.

    ``before_load(width, height, format)``: see imaging.decode_rgb (encoded sources only).
    """
    image = _rgb(source, max_pixels, before_load)
    return imaging.transform(image, spec.resize, spec.crop, spec.mean, spec.std, spec.interpolation, spec.resize_mode, out)


def preprocess_image(source, spec: Preprocessing, out: np.ndarray | None = None) -> np.ndarray:
    """One image (path, encoded bytes, PIL image, HxWx3 uint8 array) -> float32 CHW, equal to torchvision's transforms for ``spec``.

    ``out``: a 3 x crop x crop float32 array to fill instead of a new one. InputError for a
    missing file or an image that cannot be decoded or is over the pixel limits
    (imaging.MAX_IMAGE_PIXELS decoded, imaging.MAX_RESIZED_PIXELS resized).
    """
    try:
        return model_input(source, spec, out)
    except imaging.ImageRejected as exc:
        raise _input_error(source, exc) from None


def preprocess_batch(sources: Sequence, spec: Preprocessing) -> np.ndarray:
    """Several images -> float32 NCHW array (InputError at the first that cannot be used)."""
    batch = np.empty((len(sources), 3, spec.crop, spec.crop), np.float32)
    for row, source in zip(batch, sources):
        preprocess_image(source, spec, out=row)
    return batch


@dataclass
class Listing:
    """Image files found under a folder, and the entries left out with the reason."""

    files: list[Path] = field(default_factory=list)
    excluded: list[tuple[Path, str]] = field(default_factory=list)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def scan_images(folder: Path, recursive: bool = True, follow_links: bool = False, suffixes=IMAGE_SUFFIXES, within: Path | None = None) -> Listing:
    """Image files under ``folder`` (by suffix, walked in sorted order, as ImageFolder walks it) and what was left out.

    Without ``follow_links``: a symlink to a folder is not entered, a symlink to a file is
    taken only when the file is inside ``within`` (default ``folder``; an ImageFolder's class
    folder passes the data folder), and only regular files are taken. With it, links are
    followed anywhere, each real folder once (a loop of links ends).
    """
    folder = Path(folder)
    root = os.path.realpath(folder if within is None else within)
    listing = Listing()
    seen_dirs = {root}

    found: list[tuple[str, list[Path]]] = []  # (folder, its image files): sorted by folder below, as ImageFolder does

    def walk(directory: Path) -> None:
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            listing.excluded.append((directory, f"cannot be listed ({exc.strerror or type(exc).__name__})"))
            return
        files: list[Path] = []
        found.append((str(directory), files))
        for entry in entries:
            path = Path(entry.path)
            try:
                is_link = entry.is_symlink()
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError:
                continue
            if is_dir:
                if not recursive:
                    continue
                if is_link and not follow_links:
                    listing.excluded.append((path, "a link to a folder (not followed; --follow-links to follow it)"))
                    continue
                if follow_links:  # each real folder once: links may form loops or reach a folder twice
                    real = os.path.realpath(path)
                    if real in seen_dirs:
                        listing.excluded.append((path, "a folder already listed (through a link)"))
                        continue
                    seen_dirs.add(real)
                walk(path)
                continue
            if not entry.name.lower().endswith(suffixes):
                continue
            if is_link and not follow_links and not _inside(os.path.realpath(path), root):
                listing.excluded.append((path, "a link to a file outside the folder (not followed; --follow-links to follow it)"))
                continue
            try:
                mode = os.stat(path).st_mode
            except OSError as exc:
                listing.excluded.append((path, f"cannot be read ({exc.strerror or type(exc).__name__})"))
                continue
            if not stat.S_ISREG(mode):
                listing.excluded.append((path, "not a regular file"))
                continue
            files.append(path)

    walk(folder)
    for _, files in sorted(found, key=lambda item: item[0]):  # torchvision: sorted(os.walk(...)), then sorted names
        listing.files += files
    return listing


def check_image_folder(folder: Path, what: str = "image folder") -> Path:
    """``folder`` as a Path, or InputError when it is missing or not a folder."""
    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"{what} {folder} does not exist.", "check the path")
    if not folder.is_dir():
        raise InputError(f"{what} {folder} is not a folder.", "give a directory of images")
    return folder


def list_images(folder: Path, recursive: bool = True, follow_links: bool = False) -> list[Path]:
    """Image files under ``folder`` (by suffix), sorted; InputError if the folder is missing. See scan_images."""
    return sorted(scan_images(check_image_folder(folder), recursive, follow_links).files)


def load_images(paths: Sequence[Path], spec: Preprocessing, advance=None, workers: int | None = None) -> tuple[np.ndarray, list[Path], list[Path]]:
    """Preprocess every decodable image; return (batch, used paths, skipped undecodable paths).

    Decoded on a thread pool (see image_stream); ``advance(n)`` is called as images are done.
    """
    from alexnet_deploy.image_stream import ImageStream

    arrays, used, skipped = [], [], []
    for chunk in ImageStream(list(paths), spec, workers=workers):
        arrays.append(chunk.array)
        used += [paths[i] for i in chunk.indices]
        skipped += [paths[i] for i, _ in chunk.skipped]
        if advance is not None:
            advance(len(chunk.indices) + len(chunk.skipped))
    batch = np.concatenate(arrays) if arrays else np.zeros((0, 3, spec.crop, spec.crop), np.float32)
    return batch, used, skipped
