"""``alexnet eval``: accuracy of a model (ONNX of any precision, or a checkpoint) on an ImageFolder.

Preprocessing comes from the model's metadata (or the checkpoint layout's defaults and the
user's overrides) and equals torchvision's Resize/CenterCrop/ToTensor/Normalize. Rows of
the confusion matrix are true classes, columns predicted classes, both in the model's
label order.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alexnet_deploy.datasets import ImageSet, class_index_map, open_image_set, split_indices
from alexnet_deploy.errors import InputError
from alexnet_deploy.record import Preprocessing
from alexnet_deploy.image_stream import ImageStream
from alexnet_deploy.progress import ProgressLike, as_progress


@dataclass
class EvalReport:
    """Accuracy figures; ``to_dict`` gives the stable JSON fields."""

    model: str
    runtime: str
    precision: str
    n: int
    top1: float
    top5: float
    labels: list[str]
    per_class: dict[str, dict[str, float]]
    confusion: list[list[int]]
    images_per_s: float
    model_images_per_s: float | None  # None when the model's own time is not measured (eval --ray)
    batch: int
    matched: str
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Folder entries the listing left out (links out of the folder, non-regular files): {"path", "reason"}.
    excluded: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def present_classes(self) -> list[int]:
        """Indices of the labels that occur as a true or a predicted class."""
        matrix = np.asarray(self.confusion)
        return [i for i in range(len(self.labels)) if matrix[i].any() or matrix[:, i].any()]

    def top_confusions(self, count: int = 5) -> list[tuple[str, str, int]]:
        """The most frequent (true, predicted, count) mistakes."""
        matrix = np.asarray(self.confusion)
        off = matrix.copy()
        np.fill_diagonal(off, 0)
        order = np.argsort(-off, axis=None)[:count]
        pairs = [np.unravel_index(i, off.shape) for i in order]
        return [(self.labels[r], self.labels[c], int(off[r, c])) for r, c in pairs if off[r, c] > 0]


@dataclass
class _Loaded:
    """A model ready to run, with what eval needs to know about it."""

    runtime: Any
    labels: list[str]
    preprocessing: Preprocessing
    precision: str


def _load(model: Path, runtime: str | None, options, preprocessing_overrides, threads) -> _Loaded:
    from alexnet_deploy.onnx_file import check_input_file, file_kind

    model = check_input_file(Path(model), "model")
    kind = file_kind(model)
    if kind == "engine":
        raise InputError(f"{model} is a TensorRT engine; eval runs ONNX models and checkpoints.", "evaluate the .onnx the engine was built from")
    is_onnx = kind == "onnx"
    runtime = runtime or ("ort" if is_onnx else "torch")
    onnx_runtimes = ("ort", "openvino", "openvino-bf16")
    if runtime not in onnx_runtimes + ("torch",):
        raise InputError(f"unknown runtime {runtime!r} for eval.", "use --runtime ort/openvino/openvino-bf16 (ONNX files) or --runtime torch (checkpoints)")
    if is_onnx:
        if runtime == "torch":
            raise InputError(f"{model} is an ONNX model; the torch runtime runs checkpoints.", "use --runtime ort or openvino, or pass the .pth checkpoint")
        from alexnet_deploy.record import read_record
        from alexnet_deploy.onnx_file import load_onnx
        from alexnet_deploy.runtimes import open_runtime

        record = read_record(load_onnx(model, load_weights=False), str(model))
        spec = record.preprocessing
        if preprocessing_overrides is not None and any(v is not None for v in vars(preprocessing_overrides).values()):
            raise InputError("--resize/--crop/--mean/--std apply to checkpoints; an ONNX model carries its own preprocessing.", "drop them, or re-export with the right values")
        loaded = open_runtime(model, runtime, threads)
        return _Loaded(loaded, list(record.labels), spec, loaded.info().precision)
    if runtime in onnx_runtimes:
        raise InputError(f"{model} is a PyTorch checkpoint; {'OpenVINO' if runtime.startswith('openvino') else 'onnxruntime'} needs an ONNX file.", f"use --runtime torch, or export it first: alexnet export {model}")
    from alexnet_deploy.errors import require
    from alexnet_deploy.record import default_labels
    from alexnet_deploy.checkpoints.options import ModelOptions
    from alexnet_deploy.checkpoints.resolve import resolve_model
    from alexnet_deploy.record import apply_overrides
    from alexnet_deploy.runtimes.torch_runtime import TorchRuntime

    require("torch", "torch", "Evaluating checkpoints")
    options = options or ModelOptions()
    if preprocessing_overrides is not None and preprocessing_overrides.crop and not options.input_size:
        from dataclasses import replace

        options = replace(options, input_size=preprocessing_overrides.crop)
    resolved = resolve_model(model, options)
    spec = apply_overrides(resolved.preprocessing, preprocessing_overrides) if preprocessing_overrides is not None else resolved.preprocessing
    labels = resolved.checkpoint.labels if resolved.checkpoint.labels and len(resolved.checkpoint.labels) == resolved.num_classes else default_labels(resolved.num_classes)
    return _Loaded(TorchRuntime(resolved.reference, resolved.input_size, model.name), list(labels), spec, "fp32")


def evaluate(
    model: Path,
    data: Path,
    runtime: str | None = None,
    batch: int = 32,
    limit: int | None = None,
    model_options=None,
    preprocessing=None,
    threads: int | None = None,
    progress: ProgressLike = None,
    keep_predictions: bool = False,
    workers: int | None = None,
    follow_links: bool = False,
) -> EvalReport:
    """Top-1/top-5, per-class accuracy and the confusion matrix of ``model`` on the ImageFolder ``data``.

    ``runtime`` is 'ort', 'openvino', 'openvino-bf16' (ONNX files) or 'torch' (checkpoints);
    default: ort for ONNX files, torch for checkpoints.
    ``limit`` evaluates a seeded random subset of that many images (every class keeps its
    share on average). Undecodable files are skipped and listed. Images are decoded by
    ``workers`` threads (default one per CPU) while the model runs; links out of ``data`` are
    not followed unless ``follow_links``. ``keep_predictions`` sets ``report.predictions``,
    ``report.truths`` and ``report.paths`` (top-1 class, true class and file of each scored
    image, in file order; not in ``to_dict``),
    which ``optimize`` uses for agreement between variants.
    """
    progress = as_progress(progress)
    if batch < 1:
        raise InputError(f"--batch {batch} must be at least 1.", "e.g. --batch 32")
    if limit is not None and limit < 1:
        raise InputError(f"--limit {limit} must be at least 1.", "drop it to use every image")
    images = open_image_set(Path(data), "data folder", follow_links)
    if not images.labelled:
        problem = "its class sub-folders hold no images" if images.classes else "it has no class sub-folders"
        raise InputError(f"{data} is not an ImageFolder ({problem}), so there is nothing to score against.", "give an ImageFolder root: one sub-folder of images per class, named by the model's labels")
    if limit is not None and limit < len(images.paths):
        images = images.subset(split_indices(len(images.paths), limit)[0])
    progress("loading the model")
    loaded = _load(Path(model), runtime, model_options, preprocessing, threads)
    mapping, matched = class_index_map(images.classes, loaded.labels)
    kept: dict[str, list] = {"predictions": [], "truths": [], "paths": []}
    with loaded.runtime as rt:
        report = _score(rt, loaded, images, mapping, matched, batch, str(model), progress, kept, workers)
    report.excluded = excluded_entries(images)
    if keep_predictions:
        report.predictions, report.truths, report.paths = kept["predictions"], kept["truths"], kept["paths"]
    return report


def excluded_entries(images: ImageSet) -> list[dict[str, str]]:
    """The report's ``excluded`` list: what listing ``images``' folder left out, and why."""
    return [{"path": str(path), "reason": reason} for path, reason in images.excluded]


def _score(rt, loaded: _Loaded, images: ImageSet, mapping, matched, batch, name, progress, kept: dict[str, list] | None = None, workers: int | None = None) -> EvalReport:
    info = rt.info()
    if info.input_shape[2] != loaded.preprocessing.crop:
        raise InputError(f"the model takes {info.input_shape[2]}x{info.input_shape[3]} input but its preprocessing crops to {loaded.preprocessing.crop}.", "pass --crop/--input-size matching the model")
    classes = len(loaded.labels)
    confusion = np.zeros((classes, classes), dtype=np.int64)
    top5_hits = np.zeros(classes, dtype=np.int64)
    skipped: list[str] = []
    model_seconds = 0.0
    started = time.perf_counter()
    progress.start(f"evaluating {len(images.paths)} images", len(images.paths))
    stream = ImageStream(images.paths, loaded.preprocessing, batch=batch, workers=workers)
    for chunk in stream:  # decoded on a thread pool while the model runs on the previous chunk
        skipped += [str(images.paths[index]) for index, _ in chunk.skipped]
        progress.advance(len(chunk.indices) + len(chunk.skipped))
        if not chunk.indices:
            continue
        tick = time.perf_counter()
        logits = rt.run_all(chunk.array, batch)
        model_seconds += time.perf_counter() - tick
        truth = np.asarray([mapping[images.targets[index]] for index in chunk.indices])
        predicted = logits.argmax(axis=1)
        if kept is not None:
            kept["predictions"].extend(int(p) for p in predicted)
            kept["truths"].extend(int(t) for t in truth)
            kept["paths"].extend(str(images.paths[index]) for index in chunk.indices)
        np.add.at(confusion, (truth, predicted), 1)
        k = min(5, classes)
        top5 = np.argsort(-logits, axis=1)[:, :k]
        np.add.at(top5_hits, truth[(top5 == truth[:, None]).any(axis=1)], 1)
    total_seconds = time.perf_counter() - started
    return summarize(name, info.runtime, loaded.precision, list(loaded.labels), confusion, top5_hits, mapping, matched, skipped,
                     total_seconds, model_seconds, batch, images.root, len(images.paths))


def summarize(name, runtime, precision, labels, confusion, top5_hits, mapping, matched, skipped, total_seconds, model_seconds, batch, root, files) -> EvalReport:
    """The report from the counts (shared by the local loop and ``eval --ray``)."""
    n = int(confusion.sum())
    if n == 0:
        raise InputError(f"none of the {files} image files under {root} could be decoded.", "point --data at a folder of readable images")
    per_class = {}
    for index in sorted(set(mapping)):
        count = int(confusion[index].sum())
        if count:
            per_class[labels[index]] = {"n": count, "top1": float(confusion[index, index] / count), "top5": float(top5_hits[index] / count)}
    notes = [] if matched == "by name" else [f"folder classes matched to the model {matched}"]
    return EvalReport(
        model=name,
        runtime=runtime,
        precision=precision,
        n=n,
        top1=float(np.trace(confusion) / n),
        top5=float(top5_hits.sum() / n),
        labels=list(labels),
        per_class=per_class,
        confusion=confusion.tolist(),
        images_per_s=n / total_seconds if total_seconds > 0 else 0.0,
        model_images_per_s=None if model_seconds is None else (n / model_seconds if model_seconds > 0 else 0.0),
        batch=batch,
        matched=matched,
        skipped=skipped,
        notes=notes,
    )


def write_confusion_png(report: EvalReport, path: Path) -> Path:
    """Draw the confusion matrix (row-normalised shading, counts when it fits) as a PNG, atomically."""
    from PIL import Image, ImageDraw, ImageFont

    from alexnet_deploy.fileio import atomic_write

    present = report.present_classes()
    matrix = np.asarray(report.confusion, dtype=np.float64)[np.ix_(present, present)]
    names = [report.labels[i] for i in present]
    size = len(present)
    cell = max(4, min(48, 900 // max(size, 1)))
    font = ImageFont.load_default()
    show_text = cell >= 24
    margin = max((int(font.getlength(name)) for name in names), default=0) + 16 if show_text else 8
    title_h = 28
    title = f"{Path(report.model).name}: top-1 {report.top1:.1%} on {report.n} images (rows: true, columns: predicted)"
    width = max(margin + cell * size + 8, int(font.getlength(title)) + 16)
    height = title_h + margin + cell * size + 8
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((8, 8), title, fill="black", font=font)
    rows = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    top = title_h + margin
    for r in range(size):
        for c in range(size):
            share = shares[r, c]
            shade = (int(255 - 200 * share), int(255 - 120 * share), 255) if r == c else (255, int(255 - 200 * share), int(255 - 200 * share))
            box = (margin + c * cell, top + r * cell, margin + (c + 1) * cell - 1, top + (r + 1) * cell - 1)
            draw.rectangle(box, fill=shade, outline=(220, 220, 220))
            if show_text and matrix[r, c]:
                text = str(int(matrix[r, c]))
                draw.text((box[0] + (cell - font.getlength(text)) / 2, box[1] + cell / 2 - 6), text, fill="black", font=font)
    if show_text:
        for i, name in enumerate(names):
            draw.text((8, top + i * cell + cell / 2 - 6), name, fill="black", font=font)
            label = Image.new("RGBA", (int(font.getlength(name)) + 4, 14), (255, 255, 255, 0))
            ImageDraw.Draw(label).text((2, 0), name, fill="black", font=font)
            rotated = label.rotate(90, expand=True)
            image.paste(rotated, (margin + i * cell + (cell - rotated.width) // 2, top - rotated.height - 4), rotated)
    return atomic_write(Path(path), lambda tmp: image.save(tmp, format="PNG"))
