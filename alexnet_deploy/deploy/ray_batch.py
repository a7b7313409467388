"""Batch inference on Ray Data: ``alexnet predict MODEL SOURCE... --ray [ADDRESS]``.

The same predictions as the local path (``alexnet_deploy.predict``), computed by a Ray
pipeline: files are read and decoded in parallel tasks, preprocessed by the function
``Classifier`` uses (the spec comes from the model's metadata), labelled by an actor pool
of ``Classifier``s, and written as Parquet or JSONL by the workers. One undecodable or
failing image becomes a row with an ``error``; it never fails its block or the run.

Without an address a local Ray instance is started and shut down again, so the command
that works on a laptop works on a cluster (``auto``, ``ray://HOST:10001``). ``ray[data]``
is an optional extra, imported only here.
"""

from __future__ import annotations

import io
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from alexnet_deploy.errors import EnvironmentFailure, InputError, require

DEFAULT_BATCH = 32
FORMATS = {".parquet": "parquet", ".jsonl": "jsonl", ".json": "jsonl"}
COLUMNS = ("path", "labels", "probabilities", "error")


def is_ray_address(token: str | None) -> bool:
    """True when ``token`` is a Ray address rather than a file: ``auto``, ``local``, ``ray://...``, ``HOST:PORT``.

    ``--ray`` takes a value only when it looks like this (see cli.app.normalise_optional_flags),
    so ``predict model.onnx --ray images/`` keeps ``images/`` as a source.
    """
    if token is None or token.startswith("-"):
        return False
    if token in ("auto", "local") or "://" in token:
        return True
    host, sep, port = token.rpartition(":")
    return bool(sep and host and port.isdigit())


def _uri(source: str) -> bool:
    return "://" in source


# ---- worker side: these run in Ray tasks and actors ------------------------------------


def _decode_batch(batch: dict[str, np.ndarray], spec) -> dict[str, np.ndarray]:
    """Raw file bytes -> preprocessed float32 CHW tensors; a file that fails gets an error, not an exception.

    Catching everything per row is deliberate: an exception here would fail the whole block
    (every image that shares it), and Ray Data's max_errored_blocks drops whole blocks too.
    """
    from PIL import Image

    from alexnet_deploy.preprocess import preprocess_image

    images, errors = [], []
    blank = np.zeros((3, spec.crop, spec.crop), np.float32)
    for raw in batch["bytes"]:
        try:
            with Image.open(io.BytesIO(raw)) as image:
                image.load()  # decode now, so a truncated file fails here and not later
                images.append(preprocess_image(image.convert("RGB"), spec))
            errors.append("")
        except Exception as exc:  # noqa: BLE001 - reported per image, see above
            images.append(blank)
            errors.append(_reason(exc))
    return {"path": np.asarray(batch["path"], dtype=object), "image": np.stack(images), "error": np.asarray(errors, dtype=object)}


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0][:160] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class ClassifierActor:
    """One ``Classifier`` per actor; ``model`` is a path or an ObjectRef to the file's bytes."""

    def __init__(self, model, topk: int, threads: int | None):
        import ray

        from alexnet_deploy.classifier import Classifier

        # Ray does not dereference an ObjectRef passed as a constructor argument.
        if isinstance(model, ray.ObjectRef):
            model = ray.get(model)
        self.classifier = Classifier(model, threads=threads)
        self.topk = topk

    def __call__(self, batch: dict[str, np.ndarray]):
        import pyarrow as pa

        errors = [str(e) for e in batch["error"]]
        tops: list[list[tuple[str, float]]] = [[] for _ in errors]
        good = [i for i, e in enumerate(errors) if not e]
        if good:
            try:
                results = self.classifier.top(self.classifier.logits(batch["image"][good]), self.topk)
                for i, top in zip(good, results):
                    tops[i] = top
            except Exception:  # noqa: BLE001 - retry one by one so one bad input loses only itself
                for i in good:
                    try:
                        tops[i] = self.classifier.top(self.classifier.logits(batch["image"][i:i + 1]), self.topk)[0]
                    except Exception as exc:  # noqa: BLE001
                        errors[i] = _reason(exc)
        return pa.table({
            "path": pa.array([str(p) for p in batch["path"]], pa.string()),
            "labels": pa.array([[label for label, _ in top] for top in tops], pa.list_(pa.string())),
            "probabilities": pa.array([[p for _, p in top] for top in tops], pa.list_(pa.float64())),
            "error": pa.array(errors, pa.string()),
        })


# ---- driver side -----------------------------------------------------------------------


@dataclass
class RayReport:
    """What a Ray run did; ``to_dict`` gives the JSON report's fields."""

    model: str
    address: str
    output: str | None
    format: str | None
    images: int
    actors: int
    batch: int
    model_transfer: str
    ray_start_s: float
    seconds: float
    skipped: list[dict[str, str]] = field(default_factory=list)
    predictions: list[dict[str, Any]] | None = None

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in vars(self).items() if not (k == "predictions" and v is None)}
        data["images_per_s"] = self.images_per_s
        data["runtime"] = "ray"
        return data


def _files(sources: Sequence) -> tuple[list[str], int | None]:
    """Absolute local image paths (folders expanded as the local path does) and URIs passed through."""
    from alexnet_deploy.preprocess import list_images

    files: list[str] = []
    remote = False
    for source in map(str, sources):
        if _uri(source):
            files.append(source)  # listed by Ray on the workers' side (e.g. s3://bucket/images/)
            remote = True
            continue
        path = Path(source)
        if path.is_dir():
            files += [str(p.resolve()) for p in list_images(path)]
        elif path.exists():
            files.append(str(path.resolve()))
        else:
            raise InputError(f"image {path} does not exist.", "check the path")
    if not files:
        raise InputError("no image files found in the given folders.", "give .jpg/.png files or folders that hold them")
    return files, None if remote else len(files)


def _output_kind(output: Path | str | None, fmt: str | None) -> tuple[str | None, str | None]:
    """('file'|'dir'|None, 'parquet'|'jsonl'|None): a name with a known suffix is one file, anything else a folder of parts."""
    if output is None:
        if fmt is not None:
            raise InputError("--format needs --output.", "add --output preds.parquet (one file) or --output preds/ (a folder of parts)")
        return None, None
    suffix = Path(str(output)).suffix.lower()
    if suffix in FORMATS:
        if fmt is not None and fmt != FORMATS[suffix]:
            raise InputError(f"--format {fmt} does not match the output name {output}.", f"drop --format or name the file *.{fmt}")
        return "file", FORMATS[suffix]
    if fmt not in (None, "parquet", "jsonl"):
        raise InputError(f"unknown output format {fmt!r}.", "use --format parquet or --format jsonl")
    if not _uri(str(output)):
        folder = Path(output)
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise InputError(f"output folder {folder} already exists and is not empty (Ray would add files to it).", "give a new folder, or a file name ending in .parquet or .jsonl")
    return "dir", fmt or "parquet"


def connect(address: str | None, log: Callable[[str], None]) -> tuple[bool, float]:
    """Attach to Ray (already initialised in this process, ``address``, or a new local instance).

    Returns (whether this call started it, seconds it took). A remote cluster gets this
    package shipped with the job (runtime_env py_modules); its own dependencies
    (onnxruntime, pillow, pyarrow) must be on the cluster's image.
    """
    import ray

    if ray.is_initialized():
        return False, 0.0
    started = time.perf_counter()
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": False}
    if address in (None, "local") and not os.environ.get("RAY_ADDRESS"):
        log("starting a local Ray instance")
        kwargs["address"] = "local"
    else:
        import alexnet_deploy

        where = address or os.environ["RAY_ADDRESS"]
        log(f"connecting to Ray at {where}")
        kwargs["address"] = where
        kwargs["runtime_env"] = {"py_modules": [str(Path(alexnet_deploy.__file__).parent)]}
    try:
        ray.init(**kwargs)
    except Exception as exc:  # ConnectionError, RuntimeError, ValueError: all mean "no Ray there"
        raise EnvironmentFailure(
            f"cannot start or reach Ray at {kwargs['address']} ({_reason(exc)}).",
            "start a cluster with `ray start --head` and pass --ray auto, or drop the address to run locally",
        ) from None
    return True, time.perf_counter() - started


def predict_ray(
    model: Path,
    sources: Sequence,
    output: Path | str | None = None,
    fmt: str | None = None,
    address: str | None = None,
    actors: int | None = None,
    batch: int | None = None,
    topk: int = 5,
    threads: int | None = None,
    model_transfer: str = "auto",
    show_progress: bool = False,
    log: Callable[[str], None] = lambda message: None,
    on_prediction: Callable[[dict[str, Any]], None] | None = None,
) -> RayReport:
    """Label ``sources`` on Ray; write ``output`` (one .parquet/.jsonl file, or a folder of parts) or return the rows.

    ``model_transfer``: 'path' (workers read the driver's file: a local instance or a shared
    disk), 'object-store' (the bytes travel through Ray), or 'auto' (path only for a local
    instance this call started). ``actors`` defaults to the cluster's CPUs minus one, which
    is left for reading and decoding (actors holding every CPU starve the read tasks).
    """
    from alexnet_deploy.onnx_file import check_input_file, load_onnx
    from alexnet_deploy.record import read_record

    if topk < 1:
        raise InputError(f"--topk {topk} must be at least 1.", "e.g. --topk 5")
    batch = DEFAULT_BATCH if batch is None else batch
    if batch < 1:
        raise InputError(f"--batch {batch} must be at least 1.", f"e.g. --batch {DEFAULT_BATCH}")
    if actors is not None and actors < 1:
        raise InputError(f"--actors {actors} must be at least 1.", "e.g. --actors 2")
    if model_transfer not in ("auto", "path", "object-store"):
        raise InputError(f"unknown model transfer {model_transfer!r}.", "use auto, path or object-store")
    model = check_input_file(Path(model), "model")
    record = read_record(load_onnx(model, load_weights=False), str(model))  # bad models fail here, before Ray starts
    files, count = _files(sources)
    kind, fmt = _output_kind(output, fmt)
    if kind == "file":
        from alexnet_deploy.fileio import check_writable

        check_writable(Path(output), "predictions file")

    require("pyarrow", "ray", "predict --ray")
    ray = require("ray", "ray", "predict --ray")
    require("ray.data", "ray", "predict --ray")
    started, start_seconds = connect(address, log)
    try:
        import ray.data

        where = address or os.environ.get("RAY_ADDRESS") or ("local" if started else "this process's Ray")
        cpus = int(ray.cluster_resources().get("CPU", 0))
        actor_cpus = threads or 1
        if actors is None:
            actors = max(1, (cpus - 1) // actor_cpus)
        if cpus and actors * actor_cpus >= cpus:
            raise InputError(
                f"--actors {actors} x {actor_cpus} CPU would hold all {cpus} CPUs of this Ray cluster, leaving none to read and decode images.",
                f"use --actors {max(1, (cpus - 1) // actor_cpus)} (or fewer --threads)",
            )
        transfer = model_transfer if model_transfer != "auto" else ("path" if started and not address else "object-store")
        handle = str(model.resolve()) if transfer == "path" else ray.put(model.read_bytes())
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = show_progress
        if not show_progress:
            logging.getLogger("ray.data").setLevel(logging.WARNING)
        log(f"labelling {count if count is not None else 'the'} images with {actors} actor(s) x batch {batch} ({cpus} CPUs)")

        tick = time.perf_counter()
        blocks = None if count is None else max(1, math.ceil(count / batch))
        dataset = ray.data.read_binary_files(files, include_paths=True, override_num_blocks=blocks)
        dataset = dataset.map_batches(_decode_batch, fn_kwargs={"spec": record.preprocessing}, batch_size=batch, batch_format="numpy")
        dataset = dataset.map_batches(
            ClassifierActor,
            fn_constructor_kwargs={"model": handle, "topk": topk, "threads": actor_cpus},
            compute=ray.data.ActorPoolStrategy(size=actors),
            batch_size=batch,
            batch_format="numpy",
            num_cpus=actor_cpus,
        )
        images, skipped, predictions = _sink(dataset, kind, fmt, output, on_prediction)
        seconds = time.perf_counter() - tick
    finally:
        if started:
            ray.shutdown()
    if images == 0:
        raise InputError(f"none of the {len(skipped)} image file(s) could be decoded.", "give readable .jpg/.png images")
    return RayReport(
        model=str(model), address=where, output=None if output is None else str(output), format=fmt, images=images,
        actors=actors, batch=batch, model_transfer=transfer, ray_start_s=start_seconds, seconds=seconds,
        skipped=skipped, predictions=predictions,
    )


def _split(table, skipped: list[dict[str, str]]) -> int:
    """Count the good rows of an Arrow table, listing the failed ones in ``skipped``."""
    errors = table.column("error").to_pylist()
    paths = table.column("path").to_pylist()
    skipped += [{"image": p, "reason": e} for p, e in zip(paths, errors) if e]
    return sum(1 for e in errors if not e)


def _sink(dataset, kind, fmt, output, on_prediction):
    """Run the pipeline into its destination; returns (good rows, skipped rows, predictions or None)."""
    skipped: list[dict[str, str]] = []
    if kind == "dir":
        # Written by the workers; only the path and error columns are read back for the report.
        if fmt == "parquet":
            dataset.write_parquet(str(output))
        else:
            dataset.write_json(str(output))
        import pyarrow.dataset as pads

        table = pads.dataset(str(output), format="parquet" if fmt == "parquet" else "json").to_table(columns=["path", "error"])
        return _split(table, skipped), skipped, None
    if kind == "file":
        # One file: the rows stream through the driver a batch at a time (never all held at once).
        from alexnet_deploy.fileio import atomic_write

        images = 0

        def write(tmp: Path) -> None:
            nonlocal images
            writer = None
            with open(tmp, "wb") as handle:
                for table in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
                    images += _split(table, skipped)
                    if fmt == "parquet":
                        import pyarrow.parquet as pq

                        writer = writer or pq.ParquetWriter(handle, table.schema)
                        writer.write_table(table)
                    else:
                        import json

                        for row in table.to_pylist():
                            handle.write((json.dumps(row) + "\n").encode())
                if writer is not None:
                    writer.close()

        atomic_write(Path(output), write)
        return images, skipped, None
    predictions: list[dict[str, Any]] = []
    for table in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
        _split(table, skipped)
        for row in table.to_pylist():
            if row["error"]:
                continue
            item = {"image": row["path"], "top": [[label, p] for label, p in zip(row["labels"], row["probabilities"])]}
            predictions.append(item)
            if on_prediction is not None:
                on_prediction(item)
    return len(predictions), skipped, predictions
