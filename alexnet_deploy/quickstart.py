"""``alexnet quickstart``: the toolkit's main jobs on material it makes itself, in a few minutes.

Two parts. First a seeded checkpoint in seed 001's layout (hand-written LRN, untrained),
exported and verified against PyTorch on sample images: what every user's first step looks
like. Then, unless ``train`` is off, a small AlexNet trained here on drawn shapes
(:mod:`alexnet_deploy.checkpoints.demo_shapes`) and a real ``optimize`` of it: every precision
evaluated on labelled images (with intervals and the images whose top-1 changed) and timed,
and the file to ship chosen.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alexnet_deploy.errors import InputError
from alexnet_deploy.progress import ProgressLike, as_progress

# The trained part's sizes: about 11 s of training (fused SGD) and 32 s of optimize on 2 cores
# (59 s in all on the 2026-12-07 host; before fused SGD, 90 s on the 2026-12-06 one).
TRAIN_PER_CLASS = 100
VAL_PER_CLASS = 40
EPOCHS = 4
BATCHES = (1, 8)
# Each bench cell warms up and measures this long: the shapes model runs a batch of 8 in 2-20 ms,
# so a quarter second still gives a dozen or more samples per cell (14 cells at 0.5 s + 0.5 s took 7 s more).
BENCH_SECONDS = 0.25


@dataclass
class QuickstartPaths:
    """Where quickstart puts each file, under ``root``."""

    root: Path

    @property
    def checkpoint(self) -> Path:
        return self.root / "alexnet.pth"

    @property
    def labels(self) -> Path:
        return self.root / "labels.txt"

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    @property
    def onnx(self) -> Path:
        return self.root / "alexnet.onnx"

    @property
    def shapes(self) -> Path:
        return self.root / "shapes"

    @property
    def trained(self) -> Path:
        return self.shapes / "alexnet-shapes.pth"

    @property
    def train_images(self) -> Path:
        return self.shapes / "train"

    @property
    def val_images(self) -> Path:
        return self.shapes / "val"

    @property
    def optimized(self) -> Path:
        return self.shapes / "optimized"


def check_directory(directory: Path, force: bool) -> None:
    """InputError unless ``directory`` is new, empty, or ``force`` lets its demo files be replaced."""
    if directory.exists() and not directory.is_dir():
        raise InputError(f"{directory} exists and is not a directory.", "choose another DIR")
    if directory.is_dir() and any(directory.iterdir()) and not force:
        raise InputError(f"{directory} is not empty.", "choose an empty or new DIR, or add --force")


def shapes_model_options():
    """How the trained shapes model is read: torchvision's AlexNet class at a 64-pixel input."""
    from alexnet_deploy.checkpoints.demo_shapes import CROP
    from alexnet_deploy.checkpoints.options import ModelOptions

    return ModelOptions(arch="torchvision", input_size=CROP)


def shapes_preprocessing():
    """The transforms the shapes model was trained with (resize 72, crop 64, its mean and std)."""
    from alexnet_deploy.checkpoints.demo_shapes import CROP, MEAN, RESIZE, STD
    from alexnet_deploy.record import PreprocessingOverrides

    return PreprocessingOverrides(resize=RESIZE, crop=CROP, mean=MEAN, std=STD)


def run_quickstart(directory: Path, force: bool = False, train: bool = True, progress: ProgressLike = None) -> dict[str, Any]:
    """Make the demo files under ``directory`` and run the toolkit on them; returns the report.

    The report holds the paths, the export outcome (``export``), and with ``train`` the trained
    model's accuracy (``training``) and the full ``optimize`` report (``optimize``), plus the
    commands to try next (``next``). InputError when ``directory`` is not usable (checked first).
    """
    from alexnet_deploy.checkpoints import demo
    from alexnet_deploy.exporter.workflow import export_checkpoint
    from alexnet_deploy.fileio import atomic_write_bytes

    progress = as_progress(progress)
    directory = Path(directory)
    check_directory(directory, force)
    directory.mkdir(parents=True, exist_ok=True)
    paths = QuickstartPaths(directory)
    progress("making a seeded checkpoint (seed 001 layout, 10 CIFAR-10 classes)")
    demo.make_demo_checkpoint(paths.checkpoint)
    atomic_write_bytes(paths.labels, ("\n".join(demo.CIFAR10) + "\n").encode())
    demo.make_sample_images(paths.samples)
    outcome = export_checkpoint(paths.checkpoint, paths.onnx, labels=paths.labels, images=paths.samples, progress=progress)
    report: dict[str, Any] = {"checkpoint": str(paths.checkpoint), "labels": str(paths.labels), "samples": str(paths.samples), "export": outcome.to_dict()}
    next_steps = [
        f"alexnet inspect {paths.checkpoint}",
        f"alexnet inspect {outcome.path}",
        f"alexnet verify {outcome.path} --checkpoint {paths.checkpoint} --images {paths.samples}",
    ]
    if train:
        report.update(_train_and_optimize(paths, progress))
        best = paths.optimized / "best-throughput.onnx"
        next_steps += [
            f"alexnet eval {best} --data {paths.val_images}",
            f"alexnet predict {best} {paths.val_images / 'ring'}",
            f"alexnet serve {best}",
            f"alexnet optimize {paths.optimized / 'model.onnx'} --data {paths.val_images} --calib {paths.train_images} --max-drop 0.5 -o {paths.shapes / 'optimized-0.5'}",
        ]
    next_steps += [
        "alexnet export YOUR.pth --labels YOUR_LABELS   # your own checkpoint",
        "alexnet optimize YOUR.pth --data VAL_DIR --calib TRAIN_DIR   # every precision, evaluated and timed: the file to ship",
    ]
    report["next"] = next_steps
    return report


def _train_and_optimize(paths: QuickstartPaths, progress) -> dict[str, Any]:
    """Draw the shapes, train the model, optimize it with the drawn validation images."""
    from alexnet_deploy.bench.harness import TimingSettings
    from alexnet_deploy.checkpoints import demo_shapes
    from alexnet_deploy.optimize import optimize

    progress(f"drawing {TRAIN_PER_CLASS * len(demo_shapes.CLASSES)} training and {VAL_PER_CLASS * len(demo_shapes.CLASSES)} validation images of {len(demo_shapes.CLASSES)} shapes")
    demo_shapes.write_image_folder(paths.train_images, TRAIN_PER_CLASS, seed=1)
    demo_shapes.write_image_folder(paths.val_images, VAL_PER_CLASS, seed=3)
    model, seconds, train_accuracy = demo_shapes.train(paths.train_images, epochs=EPOCHS, progress=progress)
    demo_shapes.save_trained(model, paths.trained)
    optimized = optimize(
        paths.trained, paths.val_images, paths.optimized, calib=paths.train_images, batches=list(BATCHES),
        model_options=shapes_model_options(), preprocessing=shapes_preprocessing(),
        timing=TimingSettings(warmup_s=BENCH_SECONDS, duration_s=BENCH_SECONDS), progress=progress,
    )
    training = {"checkpoint": str(paths.trained), "train_images": str(paths.train_images), "val_images": str(paths.val_images),
                "classes": list(demo_shapes.CLASSES), "epochs": EPOCHS, "seconds": round(seconds, 1), "train_top1": train_accuracy}
    return {"training": training, "optimize": optimized}
