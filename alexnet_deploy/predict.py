"""``alexnet predict``: label image files with an exported model (torch-free)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from alexnet_deploy.errors import InputError
from alexnet_deploy.preprocess import list_images, to_rgb_image

CHUNK = 64  # images decoded and run at a time


def image_files(sources: Sequence[Path]) -> list[Path]:
    """The image files named, folders expanded, each file once (in the order first named); InputError if none."""
    files: dict[Path, Path] = {}  # resolved -> as named: a file named and also inside a named folder counts once
    for source in map(Path, sources):
        if source.is_dir():
            found = list_images(source)
        elif source.exists():
            found = [source]
        else:
            raise InputError(f"image {source} does not exist.", "check the path")
        for path in found:
            files.setdefault(path.resolve(), path)
    if not files:
        raise InputError("no image files found in the given folders.", "give .jpg/.png files or folders that hold them")
    return list(files.values())


def predict_files(model: Path, sources: Sequence[Path], topk: int = 5, threads: int | None = None, runtime: str = "ort") -> dict[str, Any]:
    """Top-``topk`` (label, probability) per image file; folders are expanded, undecodable files skipped.

    ``runtime``: 'ort', 'openvino' or 'openvino-bf16' (runtimes.open_runtime's names).
    Returns ``{"model", "runtime", "precision", "predictions": [{"image", "top": [[label, p], ...]}], "skipped": [{"image", "reason"}]}``.
    """
    from alexnet_deploy.classifier import Classifier

    if topk < 1:
        raise InputError(f"--topk {topk} must be at least 1.", "e.g. --topk 5")
    files = image_files(sources)
    predictions, skipped = [], []
    with Classifier(model, threads=threads, runtime=runtime) as classifier:
        for start in range(0, len(files), CHUNK):  # bounded memory for large folders
            decoded, good = [], []
            for path in files[start:start + CHUNK]:
                try:
                    decoded.append(to_rgb_image(path))
                    good.append(path)
                except InputError as exc:
                    skipped.append({"image": str(path), "reason": exc.problem})
            if decoded:
                tops = classifier.predict(decoded, topk=topk)
                predictions += [{"image": str(path), "top": [[label, prob] for label, prob in top]} for path, top in zip(good, tops)]
    if not predictions:
        raise InputError(f"none of the {len(files)} image file(s) could be decoded.", "give readable .jpg/.png images")
    return {"model": str(model), "runtime": runtime, "precision": classifier.precision, "predictions": predictions, "skipped": skipped}
