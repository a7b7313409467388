"""Batch inference on Ray Data: ``alexnet predict MODEL SOURCE... --ray [ADDRESS]``.

The same predictions as the local path (``alexnet_deploy.predict``), computed by a Ray
pipeline: files are read and decoded in parallel tasks, preprocessed by the function
``Classifier`` uses (the spec comes from the model's metadata), labelled by an actor pool
of ``Classifier``s, and written as Parquet or JSONL by the workers. One undecodable or
failing image becomes a row with an ``error``; it never fails its block or the run. A local
``--output DIR`` is filled in a staging folder beside it, renamed to DIR when complete: an
interrupted run leaves DIR as it was (see _stage_folder).

Without an address a local Ray instance is started and shut down again, so the command
that works on a laptop works on a cluster (``auto``, ``ray://HOST:10001``). ``ray[data]``
is an optional extra, imported only here.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from alexnet_deploy.errors import EnvironmentFailure, InputError, require

from alexnet_deploy.prediction_files import FORMATS  # the row format is shared with the local path

DEFAULT_BATCH = 32


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

    The same code and limits as the local path (``preprocess.model_input``: pixel limits
    checked from the header, exact torchvision preprocessing). Catching everything per row
    is deliberate: an exception here would fail the whole block (every image that shares
    it), and Ray Data's max_errored_blocks drops whole blocks too.
    """
    from alexnet_deploy.imaging import ImageRejected
    from alexnet_deploy.preprocess import model_input

    images = np.zeros((len(batch["bytes"]), 3, spec.crop, spec.crop), np.float32)
    errors = []
    for row, raw in zip(images, batch["bytes"]):
        try:
            model_input(bytes(raw), spec, out=row)
            errors.append("")
        except ImageRejected as exc:
            errors.append(str(exc))  # as the local path words it
        except Exception as exc:  # noqa: BLE001 - reported per image, see above
            errors.append(_reason(exc))
    return {"path": np.asarray(batch["path"], dtype=object), "image": images, "error": np.asarray(errors, dtype=object)}


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0][:160] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class ClassifierActor:
    """One ``Classifier`` per actor; ``model`` is a path or an ObjectRef to the file's bytes."""

    def __init__(self, model, topk: int, threads: int | None, with_classes: bool = False):
        import ray

        from alexnet_deploy.classifier import Classifier

        # Ray does not dereference an ObjectRef passed as a constructor argument.
        if isinstance(model, ray.ObjectRef):
            model = ray.get(model)
        self.classifier = Classifier(model, threads=threads)
        self.topk = topk
        self.with_classes = with_classes  # eval scores by class index (labels need not be unique)

    def __call__(self, batch: dict[str, np.ndarray]):
        import pyarrow as pa

        errors = [str(e) for e in batch["error"]]
        logits: list[np.ndarray | None] = [None] * len(errors)
        good = [i for i, e in enumerate(errors) if not e]
        if good:
            try:
                for i, row in zip(good, self.classifier.logits(batch["image"][good])):
                    logits[i] = row
            except Exception:  # noqa: BLE001 - retry one by one so one bad input loses only itself
                for i in good:
                    try:
                        logits[i] = self.classifier.logits(batch["image"][i:i + 1])[0]
                    except Exception as exc:  # noqa: BLE001
                        errors[i] = _reason(exc)
        tops = [self.classifier.top(row[None], self.topk)[0] if row is not None else [] for row in logits]
        columns = {
            "path": pa.array([str(p) for p in batch["path"]], pa.string()),
            "labels": pa.array([[label for label, _ in top] for top in tops], pa.list_(pa.string())),
            "probabilities": pa.array([[p for _, p in top] for top in tops], pa.list_(pa.float64())),
            "error": pa.array(errors, pa.string()),
        }
        if self.with_classes:
            k = min(self.topk, len(self.classifier.labels))
            columns["classes"] = pa.array([np.argsort(-row, kind="stable")[:k].tolist() if row is not None else [] for row in logits], pa.list_(pa.int32()))
        return pa.table(columns)


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


def _files(sources: Sequence, excluded: list[dict[str, str]] | None = None) -> tuple[list[str], int | None]:
    """Absolute local image paths (folders listed as the local path lists them) and URIs passed through.

    Folder entries left out (links out of the folder, non-regular files) are added to ``excluded``.
    """
    from alexnet_deploy.preprocess import scan_images

    files: list[str] = []
    remote = False
    for source in map(str, sources):
        if _uri(source):
            files.append(source)  # listed by Ray on the workers' side (e.g. s3://bucket/images/)
            remote = True
            continue
        path = Path(source)
        if path.is_dir():
            listing = scan_images(path)
            files += [str(p.resolve()) for p in sorted(listing.files)]
            if excluded is not None:
                excluded += [{"image": str(p), "reason": reason} for p, reason in listing.excluded]
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
    if suffix and not _uri(str(output)) and not Path(output).is_dir():
        # "out.csv" would silently become a folder of parquet parts named like a file
        raise InputError(f"--output {output}: {suffix} is not an output format.", "name a file *.parquet or *.jsonl, or give a folder (no suffix) for part files")
    return "dir", fmt or "parquet"


STAGING_TAG = ".ray-parts-"  # DIR's parts are written into .DIR.ray-parts-<pid>-XXXX beside it, then renamed to DIR


class OutputInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run that writes a folder; ``what_was_left`` says what is on disk now (the CLI prints it)."""

    def __init__(self, what_was_left: str):
        super().__init__(what_was_left)
        self.what_was_left = what_was_left


def _staging_prefix(folder: Path) -> str:
    return f".{folder.name[:100]}{STAGING_TAG}"


def _target_folder(output: Path | str) -> Path:
    """The local folder --output names (a link to a folder: the folder itself, where the rename must land)."""
    folder = Path(output)
    return folder.resolve() if folder.is_symlink() else folder


def _stage_folder(output: Path | str) -> Path:
    """Check a local --output DIR before Ray starts, and make the staging folder its parts go into.

    DIR must be new or an empty folder in an existing, writable folder; the staging folder is
    made beside it (same filesystem: the final rename is atomic) and named with this process's
    id, so what a killed run left is swept here by the next run (fileio.sweep_dead).
    """
    from alexnet_deploy.fileio import sweep_dead

    folder = _target_folder(output)
    parent = folder.parent if str(folder.parent) else Path(".")
    fix = "give a new folder, or a file name ending in .parquet or .jsonl"
    if folder.exists() and not folder.is_dir():
        raise InputError(f"output folder {folder} is a file.", fix)
    if folder.is_dir() and any(folder.iterdir()):
        raise InputError(f"output folder {folder} already exists and is not empty (Ray would add files to it).", fix)
    if not parent.is_dir():
        what = "is not a folder" if parent.exists() else "does not exist"
        raise InputError(f"cannot write the output folder {folder}: {parent} {what}.",
                         f"create it first (mkdir -p {parent})" if not parent.exists() else "give --output inside a folder")
    sweep_dead(parent, _staging_prefix(folder))  # a killed run's parts
    try:
        if not folder.exists():  # the filesystem's verdict on the name itself (too long, refused)
            folder.mkdir()
            folder.rmdir()
        staging = Path(tempfile.mkdtemp(prefix=f"{_staging_prefix(folder)}{os.getpid()}-", dir=parent))
        # mkdtemp makes it 0700; renamed into place it becomes DIR, which gets the mode a plain mkdir would give
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)
        return staging
    except OSError as exc:
        raise InputError(f"cannot write the output folder {folder} ({exc.strerror or exc}).", "choose a folder you can write to") from None


def _check_remote_folder(uri: str) -> None:
    """InputError when the --output URI (s3://, gs://, file://, ...) already holds files: Ray's workers write their parts
    there directly, beside whatever is there, so a rerun into the same location would double every row.

    A location pyarrow cannot list (a scheme it lacks, missing list permission) is left to Ray, which reports its own error.
    """
    try:
        import pyarrow.fs as pafs

        filesystem, path = pafs.FileSystem.from_uri(uri)
        entries = filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except Exception:  # noqa: BLE001 - not ours to judge: the write itself says what is wrong with the location
        return
    if entries:
        raise InputError(f"output folder {uri} already holds {len(entries)} entr{'y' if len(entries) == 1 else 'ies'} (Ray would add its part files to them).",
                         "give a new or empty location, or remove what is there first")


def _part_files(folder: Path) -> int:
    try:
        return sum(1 for entry in os.scandir(folder) if entry.is_file())
    except OSError:
        return 0


def _discard(staging: Path, folder: Path) -> str:
    """Remove the staging folder after a failed or interrupted run; says what is left."""
    parts = _part_files(staging)
    shutil.rmtree(staging, ignore_errors=True)
    if staging.exists():
        return (f"nothing was written to {folder}, but the staging folder {staging} could not be removed; "
                f"the next run into {staging.parent} removes it")
    if parts:
        removed = f"the {parts} part file{'s' if parts != 1 else ''} written so far {'were' if parts != 1 else 'was'} removed with {staging.name}"
    else:
        removed = f"no part had been written yet; the staging folder {staging.name} was removed"
    return f"nothing was written to {folder} ({removed}); a rerun with the same --output starts over"


def _move_into_place(staging: Path, folder: Path) -> None:
    """Rename the finished staging folder to ``folder`` (absent, or an empty folder: rename replaces it)."""
    try:
        os.rename(staging, folder)
        return
    except OSError as exc:
        reason = exc.strerror or str(exc)
    kept = folder.with_name(f"{folder.name}.{os.getpid()}")  # not a staging name: no later run sweeps it
    try:
        os.rename(staging, kept)
    except OSError:
        raise InputError(f"cannot move the finished predictions into {folder} ({reason}); they are in {staging}, which the next run into "
                         f"{staging.parent} removes.", f"move them now: mv {staging} NEW_FOLDER") from None
    raise InputError(f"cannot move the finished predictions into {folder} ({reason}); they were kept in {kept}.",
                     f"use {kept}, or rename it (mv {kept} NEW_FOLDER)")


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
    model = check_input_file(Path(model), "model")
    record = read_record(load_onnx(model, load_weights=False), str(model))  # bad models fail here, before Ray starts
    excluded: list[dict[str, str]] = []
    files, count = _files(sources, excluded)
    kind, fmt = _output_kind(output, fmt)
    if kind == "file":
        from alexnet_deploy.fileio import check_writable

        check_writable(Path(output), "predictions file")

    folder = staging = None
    if kind == "dir" and not _uri(str(output)):
        folder = _target_folder(output)
        staging = _stage_folder(output)  # before Ray starts: an unusable --output fails in a second
    elif kind == "dir":
        _check_remote_folder(str(output))
    try:
        with ray_session(model, address, actors, threads, model_transfer, show_progress, log, "predict --ray") as session:
            log(f"labelling {count if count is not None else 'the'} files with {session.actors} actor(s) x batch {batch} ({session.cpus} CPUs)")
            tick = time.perf_counter()
            dataset = session.pipeline(files, count, record.preprocessing, batch, topk)
            images, skipped, predictions = _sink(dataset, kind, fmt, staging if staging is not None else output, on_prediction)
            skipped = excluded + skipped
            seconds = time.perf_counter() - tick
        if images == 0:
            raise InputError(f"none of the {len(skipped)} image file(s) could be decoded.", "give readable .jpg/.png images")
    except BaseException as exc:
        if staging is not None:
            left = _discard(staging, folder)  # after ray.shutdown: a local instance's writers are gone
            if isinstance(exc, KeyboardInterrupt):
                raise OutputInterrupted(f"interrupted; {left}.") from None
        elif kind == "dir" and isinstance(exc, KeyboardInterrupt):
            raise OutputInterrupted(f"interrupted; part files the workers finished before it may remain in {output} (written there directly); "
                                    "remove them before a rerun (which refuses a location that holds files).") from None
        raise
    if staging is not None:
        _move_into_place(staging, folder)
    return RayReport(
        model=str(model), address=session.address, output=None if output is None else str(output), format=fmt, images=images,
        actors=session.actors, batch=batch, model_transfer=session.transfer, ray_start_s=session.start_s, seconds=seconds,
        skipped=skipped, predictions=predictions,
    )


@dataclass
class RaySession:
    """A connected Ray, the resolved actor count, and the model handle the actors receive."""

    address: str
    cpus: int
    actors: int
    actor_cpus: int
    transfer: str
    handle: Any
    start_s: float

    def pipeline(self, files: list[str], count: int | None, spec, batch: int, topk: int, with_classes: bool = False):
        """read_binary_files -> decode/preprocess tasks -> Classifier actor pool (lazy; nothing runs yet)."""
        import ray.data

        blocks = None if count is None else max(1, math.ceil(count / batch))  # ~one batch per block: steady streaming
        # Read and decode tasks reserve what their worker process uses: ~200 MiB measured here by Ray's
        # issue detector (Python, numpy, PIL, Ray) plus one batch of float32 tensors, in and out. Besides
        # being true, it keeps them apart from the actors: Ray Data fuses a task map into the following
        # actor map when their remote arguments match, and the actor would then decode one image after
        # another between model calls instead of in parallel with them.
        memory = 256 * 2**20 + 2 * batch * 3 * spec.crop * spec.crop * 4
        dataset = ray.data.read_binary_files(files, include_paths=True, override_num_blocks=blocks, memory=memory)
        dataset = dataset.map_batches(_decode_batch, fn_kwargs={"spec": spec}, batch_size=batch, batch_format="numpy", memory=memory)
        return dataset.map_batches(
            ClassifierActor,
            fn_constructor_kwargs={"model": self.handle, "topk": topk, "threads": self.actor_cpus, "with_classes": with_classes},
            compute=ray.data.ActorPoolStrategy(size=self.actors),
            batch_size=batch,
            batch_format="numpy",
            num_cpus=self.actor_cpus,
        )


@contextmanager
def ray_session(model: Path, address, actors, threads, model_transfer, show_progress, log, feature: str):
    """Connect (starting a local instance when needed, shut down again after), size the actor pool, ship the model."""
    require("pyarrow", "ray", feature)
    ray = require("ray", "ray", feature)
    require("ray.data", "ray", feature)
    if actors is not None and actors < 1:
        raise InputError(f"--actors {actors} must be at least 1.", "e.g. --actors 2")
    if model_transfer not in ("auto", "path", "object-store"):
        raise InputError(f"unknown model transfer {model_transfer!r}.", "use auto, path or object-store")
    started, start_seconds = connect(address, log)
    try:
        cpus = int(ray.cluster_resources().get("CPU", 0))
        actor_cpus = threads or 1
        if actors is None:
            actors = max(1, (cpus - 1) // actor_cpus)
        if cpus and actors * actor_cpus >= cpus:
            raise InputError(
                f"--actors {actors} x {actor_cpus} CPU would hold all {cpus} CPUs of this Ray cluster, leaving none to read and decode images.",
                f"use --actors {max(1, (cpus - 1) // actor_cpus)} (or fewer --threads)",
            )
        local = started and address in (None, "local") and not os.environ.get("RAY_ADDRESS")  # as connect() decided
        transfer = model_transfer if model_transfer != "auto" else ("path" if local else "object-store")
        handle = str(Path(model).resolve()) if transfer == "path" else ray.put(Path(model).read_bytes())
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = show_progress
        if not show_progress:
            logging.getLogger("ray.data").setLevel(logging.WARNING)
        where = address or os.environ.get("RAY_ADDRESS") or ("local" if started else "this process's Ray")
        yield RaySession(where, cpus, actors, actor_cpus, transfer, handle, start_seconds)
    finally:
        if started:
            ray.shutdown()


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
        from alexnet_deploy.prediction_files import RowWriter

        images = 0

        def write(tmp: Path) -> None:
            nonlocal images
            with open(tmp, "wb") as handle:
                writer = RowWriter(handle, fmt)
                for table in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
                    images += _split(table, skipped)
                    writer.write_table(table)
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


def eval_ray(model: Path, data: Path, address: str | None = None, actors: int | None = None, batch: int | None = None,
             limit: int | None = None, threads: int | None = None, show_progress: bool = False,
             log: Callable[[str], None] = lambda message: None, follow_links: bool = False):
    """``alexnet eval --ray``: the local eval's report (an EvalReport), the images labelled on Ray.

    Only class indices come back to the driver, a batch at a time, into the confusion matrix.
    """
    from alexnet_deploy.datasets import class_index_map, open_image_set, split_indices
    from alexnet_deploy.evaluate import excluded_entries, summarize
    from alexnet_deploy.onnx_file import check_input_file, file_kind, load_onnx
    from alexnet_deploy.record import read_record

    batch = DEFAULT_BATCH if batch is None else batch
    if batch < 1:
        raise InputError(f"--batch {batch} must be at least 1.", f"e.g. --batch {DEFAULT_BATCH}")
    if limit is not None and limit < 1:
        raise InputError(f"--limit {limit} must be at least 1.", "drop it to use every image")
    model = check_input_file(Path(model), "model")
    if file_kind(model) != "onnx":
        raise InputError(f"eval --ray runs ONNX models; {model} is not one.", f"export it first (alexnet export {model}) or drop --ray")
    record = read_record(load_onnx(model, load_weights=False), str(model))
    images = open_image_set(Path(data), "data folder", follow_links)
    if not images.labelled:
        raise InputError(f"{data} is not an ImageFolder, so there is nothing to score against.", "give an ImageFolder root: one sub-folder of images per class")
    if limit is not None and limit < len(images.paths):
        images = images.subset(split_indices(len(images.paths), limit)[0])
    labels = list(record.labels)
    mapping, matched = class_index_map(images.classes, labels)
    truth_of = {str(Path(p).resolve()): mapping[t] for p, t in zip(images.paths, images.targets)}
    classes = len(labels)
    confusion = np.zeros((classes, classes), dtype=np.int64)
    top5_hits = np.zeros(classes, dtype=np.int64)
    skipped: list[str] = []
    with ray_session(model, address, actors, threads, "auto", show_progress, log, "eval --ray") as session:
        log(f"evaluating {len(truth_of)} images with {session.actors} actor(s) x batch {batch} ({session.cpus} CPUs)")
        tick = time.perf_counter()
        dataset = session.pipeline(list(truth_of), len(truth_of), record.preprocessing, batch, 5, with_classes=True)
        for table in dataset.select_columns(["path", "error", "classes"]).iter_batches(batch_format="pyarrow", batch_size=None):
            for path, error, top in zip(*(table.column(c).to_pylist() for c in ("path", "error", "classes"))):
                if error:
                    skipped.append(path)
                    continue
                truth = truth_of[path]
                confusion[truth, top[0]] += 1
                top5_hits[truth] += truth in top
        seconds = time.perf_counter() - tick
    report = summarize(str(model), "ort", record.precision, labels, confusion, top5_hits, mapping, matched,
                       skipped, seconds, None, batch, images.root, len(images.paths))  # the actors' model time is not measured
    report.notes.append(f"labelled on Ray ({session.address}, {session.actors} actor(s)); Ray start {session.start_s:.1f} s not counted")
    report.excluded = excluded_entries(images)
    return report
