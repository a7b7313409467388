"""Encoded image -> model input, exactly as torchvision's Resize/CenterCrop/ToTensor/Normalize make it.

This module imports nothing but numpy and Pillow, and no other module of this package:
``alexnet package --triton --image-input`` copies its text verbatim into the Python
backend step of Triton's ensemble, so the server there runs this very code. Everything
else in the toolkit reaches it through :mod:`alexnet_deploy.preprocess`.

Bounded work for any input: an image is measured from its header before a pixel is
decoded, and refused (:class:`ImageRejected`) when it holds more than ``max_pixels``
pixels, or when resizing it would make more than ``MAX_RESIZED_PIXELS`` (a 100000x1 PNG
of 375 bytes would otherwise resize to 25,600,000x256 pixels, about 20 GB).

Fast where it keeps exactness: an image already in RGB is not copied by ``convert``, and
ToTensor+Normalize is a per-channel lookup table of 256 float32 values computed with the
same float32 operations torchvision applies to each pixel, so the result is bit-identical
(measured: 0.14 ms instead of 1.0 ms for a 224x224 crop).
"""

from __future__ import annotations

import io
import os
import threading

import numpy as np
from PIL import Image, UnidentifiedImageError

# PIL's own decompression-bomb threshold (Image.MAX_IMAGE_PIXELS): PIL warns above it and
# refuses above twice it; here anything above it is refused, before decoding.
MAX_IMAGE_PIXELS = 89_478_485
# The resized image (before the center crop) at most: 2^24 pixels is a 64 MiB RGBX buffer,
# and allows an aspect ratio of 256:1 at Resize(256).
MAX_RESIZED_PIXELS = 1 << 24

INTERPOLATIONS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}
# The formats read (Pillow plugin names), and only these: Image.open would otherwise try every
# plugin, EPS among them, which runs Ghostscript on the file. (Cameras' multi-picture JPEGs
# open through the JPEG plugin, which hands them to MPO itself; MPO has no opener of its own.)
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "PPM", "TIFF", "WEBP", "GIF")
# What PIL raises for a file it cannot read or decode (truncated, corrupt, not an image).
DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


class ImageRejected(ValueError):
    """An image that cannot be used: undecodable, or larger than the pixel limits. ``str()`` says why."""


class ImageTooLarge(ImageRejected):
    """An image over the pixel limits (decoded, or resized)."""


def check_pixels(width: int, height: int, max_pixels: int = MAX_IMAGE_PIXELS) -> None:
    """ImageTooLarge when a ``width`` x ``height`` image holds more than ``max_pixels`` pixels."""
    if width * height > max_pixels:
        raise ImageTooLarge(f"{width}x{height} pixels is over the limit of {max_pixels:,} pixels per image")


# What a file may hold besides its pixels. Pillow reads JPEG and GIF metadata into Python lists
# while it opens the file, before its size is known: 60 MB of empty JPEG APP segments or of
# one-byte GIF comment blocks held 2-3 GB, and each JPEG scan is decoded in full, so 30,000
# progressive scans of a 436 KB file took 39 s of CPU.
MAX_JPEG_SEGMENTS = 1024  # markers before the first scan (a camera's photo has about 10-20)
MAX_JPEG_SCANS = 128  # progressive JPEGs have about 10
MAX_METADATA_BYTES = 16 << 20  # APPn/COM segments, GIF extensions
MAX_GIF_EXTENSION_BLOCKS = 16384
# Encoded files are read whole (for check_structure): no image under the pixel limit needs more.
MAX_FILE_BYTES = 512 << 20


def check_structure(data: bytes) -> None:
    """ImageTooLarge when an encoded JPEG or GIF holds more segments, scans or metadata than the limits above.

    A cheap walk over the file's markers (no decoding); a file it cannot follow is left to Pillow.
    """
    view = memoryview(data)
    if data[:2] == b"\xff\xd8":
        scans = data.count(b"\xff\xda")  # entropy-coded data stuffs 0xFF as FF 00: FF DA is always a marker
        if scans > MAX_JPEG_SCANS:
            raise ImageTooLarge(f"a JPEG of {scans} scans is over the limit of {MAX_JPEG_SCANS}")
        position, segments, metadata = 2, 0, 0
        while position + 4 <= len(view) and view[position] == 0xFF:
            marker = view[position + 1]
            if marker == 0xFF:  # fill byte
                position += 1
                continue
            if marker == 0xDA or marker == 0xD9:  # first scan, or the end
                break
            if 0xD0 <= marker <= 0xD8 or marker == 0x01:  # no length
                position += 2
                continue
            length = (view[position + 2] << 8) | view[position + 3]
            segments += 1
            if 0xE0 <= marker <= 0xEF or marker == 0xFE:
                metadata += length
            if segments > MAX_JPEG_SEGMENTS or metadata > MAX_METADATA_BYTES:
                raise ImageTooLarge(f"a JPEG with over {MAX_JPEG_SEGMENTS} segments or {MAX_METADATA_BYTES >> 20} MiB of metadata before its image")
            position += 2 + length
    elif data[:4] == b"GIF8" and len(view) >= 13:
        position = 13 + (3 << ((view[10] & 7) + 1) if view[10] & 0x80 else 0)
        blocks, metadata = 0, 0
        while position < len(view) and view[position] == 0x21:  # extensions before the first image
            position += 2
            while position < len(view) and view[position]:
                size = view[position]
                blocks += 1
                metadata += size
                if blocks > MAX_GIF_EXTENSION_BLOCKS or metadata > MAX_METADATA_BYTES:
                    raise ImageTooLarge(f"a GIF with over {MAX_GIF_EXTENSION_BLOCKS} extension blocks or {MAX_METADATA_BYTES >> 20} MiB of extensions before its image")
                position += 1 + size
            position += 1


def decode_rgb(source, max_pixels: int = MAX_IMAGE_PIXELS, before_load=None) -> Image.Image:
    """An RGB PIL image decoded from a path, encoded bytes or a binary file object.

    The file's structure is checked first (check_structure), then its size against
    ``max_pixels`` from the header, before decoding; then ``before_load(width, height, format)``
    is called when given (a server reserves the memory the decode will take; an exception
    there propagates). ImageRejected (naming the reason) for anything that cannot be decoded.
    """
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
        elif hasattr(source, "read"):
            data = source.read(MAX_FILE_BYTES + 1)
        else:
            with open(source, "rb") as handle:
                data = handle.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise ImageTooLarge(f"a file over {MAX_FILE_BYTES >> 20} MiB is over the limit for one image")
        check_structure(data)
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
            check_pixels(*image.size, max_pixels)
            if before_load is not None:
                before_load(*image.size, image.format)
            image.load()
            # convert() copies even when the mode is already RGB (0.5 ms for 500x375): skip it for
            # single-image formats (is_animated is cheap; n_frames would walk every TIFF page).
            if image.mode == "RGB" and image.format in ("JPEG", "PNG", "BMP", "PPM") and not getattr(image, "is_animated", False):
                return image
            return image.convert("RGB")
    except ImageRejected:
        raise
    except DECODE_ERRORS as exc:
        raise ImageRejected(f"cannot be decoded ({type(exc).__name__})") from None


def resized_size(width: int, height: int, resize: int, mode: str = "shorter") -> tuple[int, int]:
    """torchvision's Resize output size: ``(resize, resize)`` for 'exact'; for 'shorter' the
    shorter side becomes ``resize`` and the longer one ``int(resize * long / short)``."""
    if mode == "exact":
        return resize, resize
    if width <= height:
        return resize, int(resize * height / width)
    return int(resize * width / height), resize


def checked_resize(width: int, height: int, resize: int, mode: str = "shorter") -> tuple[int, int]:
    """resized_size, or ImageTooLarge when that size holds more than MAX_RESIZED_PIXELS pixels."""
    size = resized_size(width, height, resize, mode)
    if size[0] * size[1] > MAX_RESIZED_PIXELS:
        raise ImageTooLarge(f"resizing {width}x{height} to {size[0]}x{size[1]} is over the limit of {MAX_RESIZED_PIXELS:,} pixels (an extreme aspect ratio)")
    return size


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """torchvision's CenterCrop: offsets ``round((side - size) / 2)``, zero padding when the image is smaller."""
    width, height = image.size
    if size > width or size > height:
        padded = Image.new(image.mode, (max(width, size), max(height, size)))
        padded.paste(image, ((max(width, size) - width) // 2, (max(height, size) - height) // 2))
        image, (width, height) = padded, padded.size
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


_TABLES: dict[tuple, np.ndarray] = {}
_TABLES_LOCK = threading.Lock()


def normalize_table(mean, std) -> np.ndarray:
    """3 x 256 float32: entry [c, v] is ToTensor+Normalize of byte value v in channel c.

    Computed as torchvision computes each pixel (``v / 255``, then ``(x - mean) / std``, all
    in float32), so looking values up gives bit-identical tensors.
    """
    key = (tuple(float(v) for v in mean), tuple(float(v) for v in std))
    table = _TABLES.get(key)
    if table is None:
        values = np.arange(256, dtype=np.float32)[:, None] / np.float32(255.0)
        table = np.ascontiguousarray(((values - np.asarray(key[0], np.float32)) / np.asarray(key[1], np.float32)).T)
        table.setflags(write=False)
        with _TABLES_LOCK:
            if len(_TABLES) > 64:  # a long-lived process fed many records: keep the cache small
                _TABLES.clear()
            _TABLES[key] = table
    return table


def transform(image: Image.Image, resize: int, crop: int, mean, std, interpolation: str = "bilinear", mode: str = "shorter",
              out: np.ndarray | None = None) -> np.ndarray:
    """An RGB PIL image -> float32 CHW (``out`` when given: a 3 x crop x crop float32 array to fill).

    Equal to ``Compose([Resize(resize or (resize, resize)), CenterCrop(crop), ToTensor(),
    Normalize(mean, std)])``. ImageRejected when the resized image would exceed MAX_RESIZED_PIXELS.
    """
    size = checked_resize(*image.size, resize, mode)
    pixels = np.asarray(center_crop(image.resize(size, INTERPOLATIONS[interpolation]), crop))
    table = normalize_table(mean, std)
    if out is None:
        out = np.empty((3, crop, crop), np.float32)
    for channel in range(3):
        np.take(table[channel], pixels[:, :, channel], out=out[channel])
    return out


def default_workers() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)
