"""optimize's stage cache against a hostile or careless user (issue 21).

- Images swapped between class folders, same names and sizes: the stages that read them are
  redone, and the accuracy equals what a fresh run into a new folder reports (the reference).
- The source model's bytes changed, same name and size (its external weights too): every stage
  is redone.
- A second run into a folder another run holds exits 2 naming the holder and touches nothing;
  a lock left by a killed holder blocks nobody.

On the tiny ONNX model of tiny_model.py (16x16 input, 3 classes): a run takes a few seconds,
so the end-to-end cases are in the slow tier; the digest and the lock are also tested fast.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tiny_model import CLASSES, tiny_model

LOCK = ".alexnet-optimize.lock"  # literal: the name the docs give


def _args(model: Path, data: Path, out: Path) -> list:
    return ["optimize", model, "--data", data, "-o", out, "--runtime", "ort", "--batch", "1", "--duration", "0.05", "--json"]


def _run(cli, model, data, out) -> dict:
    return json.loads(cli.ok(*_args(model, data, out)).stdout)


def _top1(report: dict) -> dict:
    return {(r["variant"], r["runtime"]): (r["top1"], r["images"]) for r in report["rows"]}


def _bmp_pool(folder: Path, count: int) -> list[Path]:
    """``count`` random 20x20 RGB BMP files: every one exactly 1254 bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"pool{i:02d}.bmp"
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8), "RGB").save(path)
        paths.append(path)
    assert len({p.stat().st_size for p in paths}) == 1
    return paths


def _labelled_folder(tmp_path: Path, model: Path) -> tuple[Path, Path, Path]:
    """An ImageFolder where two images of different predicted classes sit in the folder of their
    prediction, under the names x.bmp and y.bmp: swapping their bytes makes both wrong."""
    from alexnet_deploy.evaluate import evaluate

    pool = tmp_path / "pool"
    paths = _bmp_pool(pool / CLASSES[0], 12)
    predicted = dict(zip(map(Path, (r := evaluate(model, pool, keep_predictions=True)).paths), r.predictions))
    first = paths[0]
    second = next(p for p in paths if predicted[p] != predicted[first])  # the seed gives several classes
    data = tmp_path / "val"
    for name in CLASSES:
        (data / name).mkdir(parents=True)
    x = data / CLASSES[predicted[first]] / "x.bmp"
    y = data / CLASSES[predicted[second]] / "y.bmp"
    x.write_bytes(first.read_bytes())
    y.write_bytes(second.read_bytes())
    for i, path in enumerate(p for p in paths if p not in (first, second)):
        (data / CLASSES[i % len(CLASSES)] / path.name).write_bytes(path.read_bytes())
    return data, x, y


def _swap_bytes(a: Path, b: Path) -> None:
    """Swap two files' contents, keeping names, sizes and modification times."""
    times = [(p.stat().st_atime_ns, p.stat().st_mtime_ns) for p in (a, b)]
    data_a, data_b = a.read_bytes(), b.read_bytes()
    assert len(data_a) == len(data_b) and data_a != data_b
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    for path, ns in zip((a, b), times):
        os.utime(path, ns=ns)


@pytest.mark.slow  # three optimize runs of the tiny model: about 15 s on 2 shared cores
def test_images_swapped_between_classes_redo_what_reads_them(cli, tmp_path):
    model = tiny_model(tmp_path / "tiny.onnx")
    data, x, y = _labelled_folder(tmp_path, model)
    out = tmp_path / "out"
    first = _run(cli, model, data, out)
    _swap_bytes(x, y)  # same names, same sizes, same times: only the bytes differ
    again = _run(cli, model, data, out)
    reference = _run(cli, model, data, tmp_path / "fresh")  # an independent run that has no cache
    assert _top1(reference) != _top1(first)  # the swap matters: both images are now wrong
    assert _top1(again) == _top1(reference)
    assert again["budget"]["fp32_top1"] == reference["budget"]["fp32_top1"] < first["budget"]["fp32_top1"]
    ran = set(again["stages"]["ran"])
    assert {"fp16", "int8"} | {name for name in first["stages"]["ran"] if name.startswith("eval-")} <= ran  # everything that reads --data
    assert {"export", "bench-fp32"} <= set(again["stages"]["resumed"])  # and not what does not


@pytest.mark.slow
def test_a_changed_calibration_image_redoes_int8_only(cli, tmp_path):
    model = tiny_model(tmp_path / "tiny.onnx")
    data, _, _ = _labelled_folder(tmp_path, model)
    calib = tmp_path / "calib"
    images = _bmp_pool(calib, 6)
    args = [*_args(model, data, tmp_path / "out"), "--calib", calib]
    first = json.loads(cli.ok(*args).stdout)
    times = (images[0].stat().st_atime_ns, images[0].stat().st_mtime_ns)
    images[0].write_bytes(images[1].read_bytes())  # other pixels, same name and size
    os.utime(images[0], ns=times)
    again = json.loads(cli.ok(*args).stdout)
    assert "int8" in again["stages"]["ran"] and "int8" in first["stages"]["ran"]
    assert {"export", "fp16", "eval-fp32", "eval-fp16", "bench-fp32", "bench-fp16"} <= set(again["stages"]["resumed"])


def test_the_image_digest_is_of_contents_labels_and_names(tmp_path):
    """ImageSet.content_digest, which keys the stages that read images; digest(sizes=True) kept them by name and size."""
    from alexnet_deploy.datasets import open_image_set

    data = tmp_path / "val"
    a, b = _bmp_pool(data / "apple", 2)
    (data / "banana").mkdir()
    moved = data / "banana" / b.name
    before, names_and_sizes = open_image_set(data).content_digest(), open_image_set(data).digest(sizes=True)
    assert open_image_set(data).content_digest() == before  # the same bytes: the same key
    _swap_bytes(a, b)
    assert open_image_set(data).digest(sizes=True) == names_and_sizes  # the old key: blind to the swap
    swapped = open_image_set(data).content_digest()
    assert swapped != before
    b.rename(moved)  # the same bytes under another label
    assert open_image_set(data).content_digest() not in (before, swapped)
    moved.rename(b)
    assert open_image_set(data).content_digest() == swapped


def _same_size_other_weights(path: Path) -> None:
    """Rewrite ``path``'s weights negated: other bytes, same name and size."""
    import onnx
    from onnx import numpy_helper

    size = path.stat().st_size
    proto = onnx.load(str(path))
    for tensor in proto.graph.initializer:
        tensor.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(tensor), tensor.name))
    path.write_bytes(proto.SerializeToString())
    assert path.stat().st_size == size


@pytest.mark.slow  # three optimize runs of the tiny model: about 15 s on 2 shared cores
def test_a_changed_source_model_redoes_every_stage(cli, tmp_path):
    model = tiny_model(tmp_path / "tiny.onnx")
    data, _, _ = _labelled_folder(tmp_path, model)
    out = tmp_path / "out"
    first = _run(cli, model, data, out)
    assert _run(cli, model, data, out)["stages"]["ran"] == []  # unchanged: all resumed
    _same_size_other_weights(model)
    again = _run(cli, model, data, out)
    assert again["stages"]["resumed"] == [] and set(again["stages"]["ran"]) == set(first["stages"]["ran"])
    assert _top1(again) == _top1(_run(cli, model, data, tmp_path / "fresh"))


@pytest.mark.slow  # three optimize runs of the tiny model: about 15 s on 2 shared cores
def test_changed_external_weights_redo_every_stage(cli, tmp_path):
    """An ONNX source whose weights live in a file beside it: the weights are part of the source."""
    model = tiny_model(tmp_path / "tiny.onnx", external_data=True)
    weights = tmp_path / "tiny.onnx.data"
    data, _, _ = _labelled_folder(tmp_path, model)
    out = tmp_path / "out"
    first = _run(cli, model, data, out)
    assert not (out / weights.name).exists() and first["exported"] is False  # model.onnx holds the weights itself
    times = (model.stat().st_atime_ns, model.stat().st_mtime_ns)
    values = np.fromfile(weights, dtype=np.float32)
    (-values).tofile(weights)  # other weights, same size; the .onnx file itself is untouched
    os.utime(model, ns=times)
    again = _run(cli, model, data, out)
    assert again["stages"]["resumed"] == [] and set(again["stages"]["ran"]) == set(first["stages"]["ran"])
    assert _top1(again) == _top1(_run(cli, model, data, tmp_path / "fresh"))


def _snapshot(folder: Path) -> dict[str, tuple]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file()}


HOLDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from alexnet_deploy.fileio import FolderLock

    with FolderLock(Path(sys.argv[1]), sys.argv[2]):
        print("locked", flush=True)
        sys.stdin.read()  # holds the lock until killed
""")


def test_a_second_run_into_a_held_folder_exits_2_naming_the_holder_and_touches_nothing(cli, tmp_path):
    model = tiny_model(tmp_path / "tiny.onnx")
    data, _, _ = _labelled_folder(tmp_path, model)
    out = tmp_path / "out"
    (out / ".stages").mkdir(parents=True)
    (out / "model.onnx").write_bytes(b"the other run's model")
    (out / ".stages" / "export.json").write_text("{}")
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    holder = subprocess.Popen([sys.executable, str(script), str(out), LOCK], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = _snapshot(out)
        result = cli.fails(2, *_args(model, data, out))
        first_line = result.stderr.strip().splitlines()[0]
        assert f"pid {holder.pid}" in first_line and "started" in first_line and "holder.py" in first_line and str(out) in first_line
        assert _snapshot(out) == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The killed holder's lock file is still there, naming a dead pid: it must not block.
    assert json.loads((out / LOCK).read_text())["pid"] == holder.pid
    from alexnet_deploy.fileio import FolderLock

    with FolderLock(out, LOCK) as lock:
        assert json.loads((out / LOCK).read_text())["pid"] == os.getpid() == lock.holder["pid"]


def test_the_lock_is_released_when_the_run_ends(cli, tmp_path):
    """Also when it fails: a refused run holds nothing afterwards, and the file names nobody."""
    from alexnet_deploy.fileio import FolderLock

    out = tmp_path / "out"
    out.mkdir()
    with FolderLock(out, LOCK):
        with pytest.raises(Exception) as refused:
            with FolderLock(out, LOCK):
                pass
        assert f"pid {os.getpid()}" in str(refused.value)
    with FolderLock(out, LOCK):  # free again
        pass
    assert (out / LOCK).read_text() == ""


def test_a_planted_link_as_lock_file_is_refused_and_its_target_untouched(tmp_path):
    from alexnet_deploy.errors import InputError
    from alexnet_deploy.fileio import FolderLock

    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK).symlink_to(victim)
    with pytest.raises(InputError):
        with FolderLock(out, LOCK):
            pass
    assert victim.read_text() == "keep me"



def _near_tie_model(path: Path) -> Path:
    """The tiny model with classes 0 and 1 almost tied (class 2 far behind): FP16, INT8 and BF16 flip some top-1s."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(tiny_model(path)))
    for init in proto.graph.initializer:
        array = numpy_helper.to_array(init).copy()
        if init.name == "w2":
            array[1] = array[0] + np.random.default_rng(1).normal(0, 2e-3, array[0].shape)
            array[2] -= 5
        if init.name == "b2":
            array[1] = array[0]
        init.CopyFrom(numpy_helper.from_array(array.astype(np.float32), init.name))
    onnx.save(proto, str(path))
    return path


@pytest.mark.slow  # three optimize runs of the tiny model
def test_a_moved_data_folder_resumes_every_stage_and_reports_the_new_paths(cli, tmp_path):
    """The same images under another folder name: nothing is redone (their digest is of names, labels and bytes),
    and the images whose top-1 changed are named where they are now, as a run without a cache names them."""
    model = _near_tie_model(tmp_path / "tiny.onnx")
    data = tmp_path / "val"
    rng = np.random.default_rng(0)
    for i in range(60):
        folder = data / CLASSES[i % 2]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8), "RGB").save(folder / f"{i:03d}.png")
    (data / CLASSES[2]).mkdir()
    out = tmp_path / "out"
    first = _run(cli, model, data, out)
    assert sum(r["changed_count"] for r in first["rows"]) > 0  # there are changed images to name
    moved = data.rename(tmp_path / "moved-val")
    again = _run(cli, model, moved, out)
    assert again["stages"]["ran"] == [] and set(again["stages"]["resumed"]) == set(first["stages"]["ran"])
    text = (out / "report.json").read_text()
    assert str(data) + os.sep not in text, [line for line in text.splitlines() if str(data) + os.sep in line][:3]
    changed = [c["image"] for r in again["rows"] for c in r["changed_images"]]
    assert changed and all(Path(image).is_relative_to(moved) and Path(image).is_file() for image in changed), changed
    fresh = _run(cli, model, moved, tmp_path / "fresh")  # no cache: what the rows must say, paths included
    assert [r["changed_images"] for r in again["rows"]] == [r["changed_images"] for r in fresh["rows"]]
    assert _top1(again) == _top1(fresh) == _top1(first)
