"""``alexnet predict``: label image files with an exported model (torch-free).

Images are decoded and preprocessed on a thread pool while the model runs on the previous
chunk (:mod:`alexnet_deploy.image_stream`), in input order, with bounded memory. With
``output`` the rows stream into one Parquet or JSON Lines file (written atomically) instead
of being returned, so a folder of any size fits.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

from alexnet_deploy.errors import InputError
from alexnet_deploy.preprocess import scan_images

CHUNK = 32  # images decoded and run at a time (the default --batch, as with --ray)


def image_files(sources: Sequence[Path], follow_links: bool = False) -> tuple[list[Path], list[dict[str, str]]]:
    """(the image files named, folders expanded, each file once in the order first named; the folder entries left out).

    Folders are listed by ``preprocess.scan_images`` (links out of a folder are left out
    unless ``follow_links``). InputError for a missing source, or when no file is found.
    """
    files: dict[Path, Path] = {}  # resolved -> as named: a file named and also inside a named folder counts once
    excluded: list[dict[str, str]] = []
    for source in map(Path, sources):
        if source.is_dir():
            listing = scan_images(source, follow_links=follow_links)
            found = sorted(listing.files)
            excluded += [{"image": str(path), "reason": reason} for path, reason in listing.excluded]
        elif source.exists():
            found = [source]
        else:
            raise InputError(f"image {source} does not exist.", "check the path")
        for path in found:
            files.setdefault(path.resolve(), path)
    if not files:
        where = f" ({len(excluded)} entries left out, e.g. {excluded[0]['image']}: {excluded[0]['reason']})" if excluded else ""
        raise InputError(f"no image files found in the given folders{where}.", "give .jpg/.png files or folders that hold them")
    return list(files.values()), excluded


def predict_files(model: Path, sources: Sequence[Path], topk: int = 5, threads: int | None = None, runtime: str = "ort",
                  output: Path | None = None, batch: int | None = None, workers: int | None = None, follow_links: bool = False,
                  on_prediction: Callable[[dict[str, Any]], None] | None = None, progress=None) -> dict[str, Any]:
    """Top-``topk`` (label, probability) per image file; folders are expanded, undecodable files skipped.

    ``runtime``: 'ort', 'openvino' or 'openvino-bf16' (runtimes.open_runtime's names). ``batch``
    images are decoded (by ``workers`` threads) and run at a time. ``on_prediction(item)`` is
    called for each labelled image as soon as it is known. With ``output`` (FILE.parquet or
    FILE.jsonl) every row, skipped images included (with their ``error``), is written there and
    ``predictions`` is None. Returns ``{"model", "runtime", "precision", "images", "seconds",
    "images_per_s", "output", "predictions": [{"image", "top": [[label, p], ...]}] | None,
    "skipped": [{"image", "reason"}]}``.
    """
    from alexnet_deploy.classifier import Classifier
    from alexnet_deploy.image_stream import ImageStream
    from alexnet_deploy.progress import as_progress

    progress = as_progress(progress)
    if topk < 1:
        raise InputError(f"--topk {topk} must be at least 1.", "e.g. --topk 5")
    batch = CHUNK if batch is None else batch
    if batch < 1:
        raise InputError(f"--batch {batch} must be at least 1.", f"e.g. --batch {CHUNK}")
    fmt = None
    if output is not None:
        from alexnet_deploy.fileio import check_writable
        from alexnet_deploy.prediction_files import file_format, require_format

        fmt = file_format(output)
        require_format(fmt)
        check_writable(Path(output), "predictions file")
    files, excluded = image_files(sources, follow_links)
    skipped = list(excluded)
    predictions: list[dict[str, Any]] | None = [] if output is None else None
    images = 0

    with Classifier(model, threads=threads, runtime=runtime) as classifier:
        started = time.perf_counter()

        def run(writer) -> None:
            nonlocal images
            progress.start(f"labelling {len(files)} images", len(files))
            for chunk in ImageStream(files, classifier.preprocessing, batch=batch, workers=workers):
                rows = []
                for index, reason in chunk.skipped:
                    skipped.append({"image": str(files[index]), "reason": reason})
                    rows.append((index, None, reason))
                if chunk.indices:
                    tops = classifier.top(classifier.logits(chunk.array), topk)
                    rows += [(index, top, "") for index, top in zip(chunk.indices, tops)]
                    images += len(tops)
                rows.sort(key=lambda r: r[0])  # input order, skipped images in their place
                for index, top, reason in rows:
                    if top is None:
                        continue
                    item = {"image": str(files[index]), "top": [[label, prob] for label, prob in top]}
                    if predictions is not None:
                        predictions.append(item)
                    if on_prediction is not None:
                        on_prediction(item)
                if writer is not None:
                    from alexnet_deploy.prediction_files import row

                    writer.write_rows([row(str(files[index]), top, reason) for index, top, reason in rows])
                progress.advance(len(chunk.indices) + len(chunk.skipped))
            if images == 0:
                raise InputError(f"none of the {len(files)} image file(s) could be decoded.", "give readable .jpg/.png images")

        if output is None:
            run(None)
        else:
            from alexnet_deploy.fileio import atomic_write
            from alexnet_deploy.prediction_files import RowWriter

            def write(tmp: Path) -> None:
                with open(tmp, "wb") as handle:
                    writer = RowWriter(handle, fmt)
                    run(writer)
                    writer.close()

            atomic_write(Path(output), write)
        seconds = time.perf_counter() - started
    return {
        "model": str(model), "runtime": runtime, "precision": classifier.precision, "images": images, "seconds": seconds,
        "images_per_s": images / seconds if seconds > 0 else 0.0, "output": None if output is None else str(output),
        "format": fmt, "predictions": predictions, "skipped": skipped,
    }
