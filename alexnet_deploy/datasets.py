"""Image sets read from disk for calibration and evaluation (torch-free).

A folder with one sub-folder per class is read the way ``torchvision.datasets.ImageFolder``
reads it (classes are the sorted sub-folder names; files by image suffix, walked in sorted
order), so class indices match training. Any other folder is an unlabelled set.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from alexnet_deploy.errors import InputError
from alexnet_deploy.record import default_labels
from alexnet_deploy.preprocess import IMAGE_SUFFIXES, check_image_folder, scan_images


@dataclass
class ImageSet:
    """Image files, with class indices (into ``classes``) when the folder is an ImageFolder.

    An unlabelled set may still list ``classes`` (sub-folders that hold no images).
    ``excluded``: entries the listing left out (links out of the folder, non-regular files), with the reason.
    """

    root: Path
    paths: list[Path]
    targets: list[int] | None = None
    classes: list[str] | None = None
    excluded: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def labelled(self) -> bool:
        return self.targets is not None

    def subset(self, indices: Sequence[int]) -> "ImageSet":
        """The images at ``indices`` (in that order)."""
        targets = [self.targets[i] for i in indices] if self.targets is not None else None
        return ImageSet(self.root, [self.paths[i] for i in indices], targets, self.classes, self.excluded)

    def digest(self, sizes: bool = False) -> str:
        """sha256 of the sorted relative file names (and, with ``sizes``, each file's size): identifies which images were used."""
        names = sorted(
            (str(p.relative_to(self.root)) if p.is_relative_to(self.root) else str(p)) + (f":{p.stat().st_size}" if sizes else "")
            for p in self.paths
        )
        return hashlib.sha256("\n".join(names).encode()).hexdigest()

    def content_digest(self, progress=None, what: str = "images") -> str:
        """sha256 of what the images *are*: the class list, then for every image its relative path,
        its label (class name; "" when unlabelled) and the sha256 of its bytes, read in 1 MiB chunks.

        Unlike :meth:`digest`, swapping the contents of two files of the same name and size
        changes it. One pass over the bytes; ``progress`` (a Progress) counts the images.
        InputError when an image cannot be read.
        """
        import json

        from alexnet_deploy.progress import as_progress

        progress = as_progress(progress)
        progress.start(f"hashing {len(self.paths)} {what}", len(self.paths))
        outer = hashlib.sha256()
        outer.update((json.dumps({"classes": self.classes, "labelled": self.labelled}) + "\n").encode())
        for index, path in enumerate(self.paths):
            rel = path.relative_to(self.root).as_posix() if path.is_relative_to(self.root) else str(path)
            label = self.classes[self.targets[index]] if self.targets is not None and self.classes else ""
            inner = hashlib.sha256()
            size = 0
            try:
                with open(path, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        inner.update(chunk)
                        size += len(chunk)
            except OSError as exc:
                raise InputError(f"cannot read {path} ({exc.strerror or exc}).", "fix its permissions or remove it from the folder") from None
            outer.update((json.dumps([rel, label, size, inner.hexdigest()]) + "\n").encode())
            progress.advance(1)
        return outer.hexdigest()


def open_image_set(root: Path, what: str = "image folder", follow_links: bool = False) -> ImageSet:
    """The images under ``root``: labelled if it holds class sub-folders, else all images found.

    Files are listed as ``preprocess.scan_images`` lists them: links out of the folder and
    links to folders are not followed unless ``follow_links`` (they land in ``excluded``).
    InputError when the folder is missing or holds no image files.
    """
    root = check_image_folder(Path(root), what)
    entries = sorted(os.scandir(root), key=lambda e: e.name)
    # ImageFolder's classes are the sub-folders; a link to one counts only when links are followed.
    classes = [entry.name for entry in entries if entry.is_dir() and (follow_links or not entry.is_symlink())]
    paths: list[Path] = []
    targets: list[int] = []
    excluded: list[tuple[Path, str]] = []
    if follow_links is False:
        excluded += [(Path(entry.path), "a link to a folder (not followed; --follow-links to follow it)") for entry in entries if entry.is_dir() and entry.is_symlink()]
    for index, name in enumerate(classes):
        listing = scan_images(root / name, follow_links=follow_links, within=root)  # a link to another class's image is inside
        paths += listing.files
        targets += [index] * len(listing.files)
        excluded += listing.excluded
    if paths:
        return ImageSet(root, paths, targets, classes, excluded)
    listing = scan_images(root, follow_links=follow_links)
    if not listing.files:
        where = f" ({len(listing.excluded)} entries left out: {listing.excluded[0][0].name} is {listing.excluded[0][1]})" if listing.excluded else ""
        raise InputError(f"{what} {root} holds no image files ({', '.join(IMAGE_SUFFIXES[:4])}, ...){where}.", "point it at a folder of images")
    return ImageSet(root, listing.files, None, classes or None, listing.excluded)  # unlabelled; classes kept to say why


def class_index_map(folder_classes: Sequence[str], model_labels: Sequence[str]) -> tuple[list[int], str]:
    """Model class index for each folder class, and how they were matched.

    By name when every folder class is one of the model's labels (a folder may hold a
    subset); by position when the model has placeholder labels and the counts agree.
    """
    position = {label: i for i, label in enumerate(model_labels)}
    if all(name in position for name in folder_classes):
        return [position[name] for name in folder_classes], "by name"
    if list(model_labels) == default_labels(len(model_labels)) and len(folder_classes) == len(model_labels):
        return list(range(len(folder_classes))), "by position (the model has no label names)"
    missing = [name for name in folder_classes if name not in position][:3]
    raise InputError(
        f"the folder's classes do not match the model's labels ({', '.join(missing)} not among {', '.join(list(model_labels)[:5])}{', ...' if len(model_labels) > 5 else ''}).",
        "export the model with --labels pointing at the training ImageFolder, or evaluate on a folder named by the model's labels",
    )


def split_indices(count: int, first: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """A seeded shuffle of ``range(count)`` cut after ``first`` items; both parts sorted."""
    order = np.random.default_rng(seed).permutation(count)
    return sorted(int(i) for i in order[:first]), sorted(int(i) for i in order[first:])


def synthetic_image(rng: np.random.Generator):
    """An RGB PIL image of gradients and random shapes, of random size (no meaning, only statistics)."""
    from PIL import Image, ImageDraw

    width, height = int(rng.integers(180, 400)), int(rng.integers(180, 400))
    ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    colour = rng.uniform(0.2, 1.0, size=(1, 1, 3)).astype(np.float32)
    base = np.broadcast_to(ramp * colour, (height, width, 3)) + rng.normal(0, 12, (height, width, 3))
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        x0, y0 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
        box = (x0, y0, x0 + int(rng.integers(20, width // 2)), y0 + int(rng.integers(20, height // 2)))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    return image


def synthetic_images(count: int, seed: int = 0) -> list:
    """``count`` synthetic PIL images from a seeded generator."""
    rng = np.random.default_rng(seed)
    return [synthetic_image(rng) for _ in range(count)]
