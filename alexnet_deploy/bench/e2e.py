"""``alexnet bench MODEL.onnx --e2e IMAGES/``: what a user gets from image files, beside what the model alone does.

Per runtime x model, in one run, on the same folder of images:

- **decode**: reading, decoding and preprocessing only (``image_stream``), with 1 thread and
  with ``workers`` threads: the images/s the input side can feed, and how it grows with threads;
- **model**: the model alone on preprocessed batches of ``batch`` images (the number ``bench`` gives);
- **end to end**: decoding on the thread pool while the model runs (what ``predict`` and ``eval`` do).

The bottleneck is the slower of decode (at ``workers`` threads) and model. Both stages use the
same CPU cores, so end to end cannot reach the slower stage's figure unless cores are spare: the
report gives the estimate ``1 / (1/model + decode_cpu_s_per_image / cores)`` (every core busy
with one stage or the other) beside it, so a low share of the model figure is told apart from a
pipeline that fails to overlap. Each measurement cycles the folder for ``duration`` seconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from alexnet_deploy.errors import AlexnetError, InputError
from alexnet_deploy.progress import ProgressLike, as_progress

E2E_RUNTIMES = ("ort", "openvino", "openvino-bf16")


@dataclass
class E2EReport:
    """Machine, settings, the decode figures and one row per runtime x model; ``to_dict`` is the JSON."""

    machine: dict[str, Any]
    settings: dict[str, Any]
    images: dict[str, Any]
    decode: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"machine": self.machine, "settings": self.settings, "images": self.images, "decode": self.decode, "rows": self.rows, "skipped": self.skipped}


def _for_duration(step, duration: float) -> tuple[int, float]:
    """Call ``step(deadline)`` (returns images done; stops early at ``deadline``) until ``duration``
    seconds have passed, cycling a folder as often as it takes; (images, seconds)."""
    done, started = 0, time.perf_counter()
    deadline = started + duration
    while True:
        done += step(deadline)
        elapsed = time.perf_counter() - started
        if elapsed >= duration:
            return done, elapsed


def _stream_until(stream, deadline: float, use=None) -> int:
    """Images of ``stream`` consumed (each chunk passed to ``use``) until it ends or ``deadline`` passes."""
    count = 0
    for chunk in stream:  # leaving the loop early cancels what the pool had not started
        if chunk.indices:
            count += len(chunk.indices) if use is None else use(chunk)
        if time.perf_counter() >= deadline:
            break
    return count


def measure_decode(paths: Sequence[Path], spec, workers: int, batch: int, duration: float) -> dict[str, float]:
    """Images/s of decoding + preprocessing alone with ``workers`` threads, and the CPU seconds one image takes."""
    from alexnet_deploy.image_stream import ImageStream

    busy = [0.0]

    def one_pass(deadline: float) -> int:
        stream = ImageStream(paths, spec, batch=batch, workers=workers)
        count = _stream_until(stream, deadline)
        busy[0] += stream.stats.decode_s
        return count

    images, seconds = _for_duration(one_pass, duration)
    if images == 0:
        raise InputError(f"none of the {len(paths)} image files could be decoded.", "point --e2e at a folder of readable images")
    return {"workers": workers, "images_per_s": images / seconds, "seconds_per_image": busy[0] / images}


def measure_model(runtime, sample: np.ndarray, batch: int, duration: float) -> float:
    """Images/s of the model alone on a preprocessed batch of ``batch`` images (after one warm-up call)."""
    data = np.resize(sample, (batch,) + sample.shape[1:])  # the folder's images, repeated when it has fewer
    runtime.run_all(data, batch)
    return _rate(*_for_duration(lambda deadline: len(runtime.run_all(data, batch)), duration))


def measure_end_to_end(runtime, paths: Sequence[Path], spec, workers: int, batch: int, duration: float) -> float:
    """Images/s of decoding on ``workers`` threads while the model runs, in input order (predict's loop)."""
    from alexnet_deploy.image_stream import ImageStream

    def one_pass(deadline: float) -> int:
        return _stream_until(ImageStream(paths, spec, batch=batch, workers=workers), deadline, lambda chunk: len(runtime.run_all(chunk.array, batch)))

    return _rate(*_for_duration(one_pass, duration))


def _rate(images: int, seconds: float) -> float:
    return images / seconds if seconds > 0 else 0.0


def run_e2e(models: Sequence[Path], folder: Path, runtimes: Sequence[str], batch: int = 32, workers: int | None = None,
            duration: float = 3.0, threads: int | None = None, progress: ProgressLike = None, follow_links: bool = False) -> E2EReport:
    """Measure decode, model and end to end for every runtime x ONNX model on the images under ``folder``.

    The decode figures depend on the images and the preprocessing only, so they are measured
    once per distinct preprocessing. A runtime that cannot run here is listed in ``skipped``.
    """
    from alexnet_deploy.bench.runner import machine_info
    from alexnet_deploy.image_stream import ImageStream
    from alexnet_deploy.imaging import default_workers
    from alexnet_deploy.onnx_file import check_input_file, file_kind, load_onnx
    from alexnet_deploy.preprocess import check_image_folder, scan_images
    from alexnet_deploy.record import read_record
    from alexnet_deploy.runtimes import open_runtime

    progress = as_progress(progress)
    if batch < 1:
        raise InputError(f"--batch {batch} must be at least 1.", "e.g. --batch 32")
    if duration <= 0:
        raise InputError(f"--duration {duration} must be > 0 seconds.", "e.g. --duration 3")
    unknown = [r for r in runtimes if r not in E2E_RUNTIMES]
    if unknown:
        raise InputError(f"--e2e runs ONNX files on CPU runtimes; {', '.join(unknown)} is not one.", f"use --runtime {','.join(E2E_RUNTIMES)}")
    workers = workers or default_workers()
    listing = scan_images(check_image_folder(Path(folder), "--e2e folder"), follow_links=follow_links)
    paths = sorted(listing.files)
    if not paths:
        raise InputError(f"--e2e folder {folder} holds no image files.", "point it at a folder of .jpg/.png images")
    records = {}
    for model in models:
        model = check_input_file(Path(model), "model")
        if file_kind(model) != "onnx":
            raise InputError(f"--e2e runs ONNX models; {model} is not one.", f"export it first: alexnet export {model}")
        records[model] = read_record(load_onnx(model, load_weights=False), str(model))

    report = E2EReport(
        machine=machine_info(threads),
        settings={"batch": batch, "workers": workers, "duration_s": duration, "threads": threads},
        images={"folder": str(folder), "count": len(paths), "excluded": len(listing.excluded), "median_size": _median_size(paths)},
        decode={},
    )
    decode_by_spec: dict[Any, dict[str, Any]] = {}
    for model, record in records.items():
        spec = record.preprocessing
        if spec not in decode_by_spec:
            progress(f"decoding {len(paths)} images with 1 and {workers} threads ({spec.describe()})")
            one = measure_decode(paths, spec, 1, batch, duration)
            many = one if workers == 1 else measure_decode(paths, spec, workers, batch, duration)
            decode_by_spec[spec] = {"preprocessing": spec.describe(), "threads_1": one, f"threads_{workers}": many,
                                    "scaling": many["images_per_s"] / one["images_per_s"] if one["images_per_s"] else None}
            decode_by_spec[spec]["_sample"] = next(iter(ImageStream(paths[:batch], spec, batch=batch, ahead=0))).array
        decode = decode_by_spec[spec]
        cores = report.machine.get("cores") or default_workers()
        for runtime_name in runtimes:
            progress(f"{runtime_name} {model.name}: model alone, then end to end")
            try:
                with open_runtime(model, runtime_name, threads) as runtime:
                    sample = decode["_sample"]
                    if len(sample) == 0:
                        raise InputError(f"none of the first {batch} images under {folder} could be decoded.", "give readable images")
                    model_ips = measure_model(runtime, sample, batch, duration)
                    e2e_ips = measure_end_to_end(runtime, paths, spec, workers, batch, duration)
                    precision = runtime.info().precision
            except AlexnetError as exc:
                report.skipped.append({"runtime": runtime_name, "model": str(model), "reason": exc.problem})
                continue
            decode_ips = decode[f"threads_{workers}"]["images_per_s"]
            cpu_per_image = decode["threads_1"]["seconds_per_image"]
            bound = 1.0 / (1.0 / model_ips + cpu_per_image / cores)
            report.rows.append({
                "runtime": runtime_name, "model": str(model), "precision": precision, "batch": batch, "workers": workers,
                "model_ips": model_ips, "decode_ips": decode_ips, "e2e_ips": e2e_ips, "e2e_share_of_model": e2e_ips / model_ips,
                "shared_cores_bound_ips": bound, "e2e_share_of_bound": e2e_ips / bound,
                "bottleneck": "decode" if decode_ips < model_ips else "model",
            })
    report.decode = {spec.describe(): {k: v for k, v in d.items() if not k.startswith("_")} for spec, d in decode_by_spec.items()}
    return report


def _median_size(paths: Sequence[Path], sample: int = 64) -> str:
    """'500x375': the median width and height of (up to ``sample``) images, read from their headers."""
    from PIL import Image

    sizes = []
    for path in paths[:: max(1, len(paths) // sample)][:sample]:
        try:
            with Image.open(path) as image:
                sizes.append(image.size)
        except Exception:  # noqa: BLE001 - a file that is not an image only leaves the median out
            continue
    if not sizes:
        return "?"
    return f"{int(np.median([w for w, _ in sizes]))}x{int(np.median([h for _, h in sizes]))}"


def e2e_markdown(data: dict[str, Any]) -> str:
    """The end-to-end table (model only, decode only, end to end, per runtime) for BENCHMARKS.md or a terminal."""
    lines = [
        "| runtime | model | precision | batch | model only (img/s) | decode only, {w} threads (img/s) | end to end (img/s) | end to end / model | shared-cores bound (img/s) | bottleneck |".format(w=data["settings"]["workers"]),
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in data["rows"]:
        lines.append(f"| {r['runtime']} | {Path(r['model']).name} | {r['precision']} | {r['batch']} | {r['model_ips']:.1f} | {r['decode_ips']:.1f} | "
                     f"{r['e2e_ips']:.1f} | {100 * r['e2e_share_of_model']:.0f}% | {r['shared_cores_bound_ips']:.1f} | {r['bottleneck']} |")
    return "\n".join(lines)


def decode_lines(data: dict[str, Any]) -> list[str]:
    """One line per preprocessing: decode images/s at 1 and N threads, the scaling and the CPU time per image."""
    workers = data["settings"]["workers"]
    lines = []
    for described, d in data["decode"].items():
        one, many = d["threads_1"], d[f"threads_{workers}"]
        lines.append(f"decode + preprocess ({described}) of {data['images']['count']} images, median {data['images']['median_size']}: "
                     f"{one['images_per_s']:.1f} img/s on 1 thread ({1000 * one['seconds_per_image']:.2f} ms CPU per image), "
                     f"{many['images_per_s']:.1f} img/s on {workers} threads ({d['scaling']:.2f}x)")
    return lines


E2E_TITLE = "## End to end from image files (`alexnet bench --e2e`)"


def e2e_section(data: dict[str, Any]) -> str:
    """The BENCHMARKS.md section: machine, images, decode scaling, the table, the ISA line and how to read it."""
    from alexnet_deploy.bench.report import ceilings_line

    machine, settings = data["machine"], data["settings"]
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
    lines = [
        E2E_TITLE, "",
        f"{machine['date']}, {machine['cpu']}, {machine['cores']} cores, runtime threads {settings['threads'] or 'default'}; {versions}.",
        f"{data['images']['count']} images (median {data['images']['median_size']}) from {Path(data['images']['folder']).name}/, "
        f"{settings['duration_s']:g} s per measurement (the folder cycled), batch {settings['batch']}, {settings['workers']} decode threads.",
        "",
    ]
    lines += [f"- {line}" for line in decode_lines(data)]
    lines += ["", e2e_markdown(data), ""]
    if data["skipped"]:
        lines += ["Not measured here:"] + [f"- {s['runtime']} on {Path(s['model']).name}: {s['reason']}" for s in data["skipped"]] + [""]
    lines += [
        ceilings_line(machine), "",
        "Model only: preprocessed batches, as `alexnet bench` measures. Decode only: files read, decoded and preprocessed "
        "(exactly torchvision's transforms) by the thread pool, no model. End to end: both at once, as `alexnet predict` and "
        "`alexnet eval` run. The shared-cores bound, 1 / (1/model + decode CPU per image / cores), is the most end to end can "
        "give when decoding and the model share every core; a row far under it would mean the stages do not overlap.",
    ]
    return "\n".join(lines) + "\n"
