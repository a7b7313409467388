"""What Ray Data costs against the local path: ``python -m alexnet_deploy.deploy.ray_bench MODEL.onnx [IMAGES] [--rounds N] [--batch B]``.

The local path (``alexnet predict``: decode, then Classifier, one process) and ``predict
--ray`` (read/decode tasks + one Classifier actor, rows written to a Parquet file) label
the same folder in alternating rounds, so a machine shared with other work slows both
alike. Ray's start-up is timed once and kept out of the rates (it is paid once per job).
Prints JSON: images/s of each per round, their medians, the ratio, the per-actor rate,
and Ray's start and shutdown seconds. Without IMAGES, 300 synthetic images are made.
(Here and not in bench/: it measures deploy code, and imports run downward only.)
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def make_images(folder: Path, count: int = 300) -> Path:
    """``count`` photo-sized random JPEGs (decoding costs what real photos cost)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        pixels = rng.integers(0, 256, size=(375, 500, 3), dtype=np.uint8)
        Image.fromarray(pixels, "RGB").save(folder / f"img{i:04d}.jpg", quality=90)
    return folder


def measure(model: Path, images: Path, rounds: int = 3, batch: int = 32, actors: int = 1, threads: int | None = None) -> dict:
    import ray

    from alexnet_deploy.deploy.ray_batch import predict_ray
    from alexnet_deploy.predict import predict_files

    tick = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False)
    start_s = time.perf_counter() - tick
    ray.data.DataContext.get_current().enable_progress_bars = False
    cpus = int(ray.cluster_resources().get("CPU", 0))
    local, remote = [], []
    try:
        with tempfile.TemporaryDirectory() as scratch:
            for index in range(rounds + 1):  # round 0 warms caches and the worker pool; not counted
                tick = time.perf_counter()
                n_local = len(predict_files(model, [images], threads=threads)["predictions"])
                local_rate = n_local / (time.perf_counter() - tick)
                tick = time.perf_counter()
                report = predict_ray(model, [images], output=Path(scratch) / f"r{index}.parquet", actors=actors, batch=batch, threads=threads)
                ray_rate = report.images / (time.perf_counter() - tick)
                if index:
                    local.append(local_rate)
                    remote.append(ray_rate)
    finally:
        tick = time.perf_counter()
        ray.shutdown()
        stop_s = time.perf_counter() - tick
    local_median, ray_median = statistics.median(local), statistics.median(remote)
    return {
        "model": str(model), "images": n_local, "batch": batch, "actors": actors, "cpus": cpus, "rounds": rounds,
        "local_images_per_s": local, "ray_images_per_s": remote,
        "local_median": local_median, "ray_median": ray_median, "ray_over_local": ray_median / local_median,
        "per_actor_images_per_s": ray_median / actors, "ray_start_s": start_s, "ray_shutdown_s": stop_s,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("images", type=Path, nargs="?")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--actors", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime threads for both paths (default: local all cores, Ray 1 per actor)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        images = args.images or make_images(Path(scratch) / "images")
        print(json.dumps(measure(args.model, images, args.rounds, args.batch, args.actors, args.threads), indent=2))


if __name__ == "__main__":
    main()
