"""Fast checks of the pieces under quantize/eval/verify: image sets, class matching, criteria, chunked runs."""

from __future__ import annotations

import numpy as np
import pytest

from alexnet_deploy.datasets import class_index_map, open_image_set, split_indices
from alexnet_deploy.errors import InputError


def _png(path, value=0):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (value, value, value)).save(path)


def test_image_folder_order_and_targets_equal_torchvision(tmp_path):
    import torchvision

    for cls, names in {"b": ["z.png", "a.PNG", "sub/c.png"], "a": ["x.jpg"], ".hidden": ["h.png"], "c": []}.items():
        (tmp_path / cls).mkdir(exist_ok=True)
        for name in names:
            if name.endswith("jpg"):
                from PIL import Image

                Image.new("RGB", (8, 8)).save(tmp_path / cls / name)
            else:
                _png(tmp_path / cls / name)
    (tmp_path / "loose.png").write_bytes(b"")  # files beside class folders are not samples
    ours = open_image_set(tmp_path)
    theirs = torchvision.datasets.ImageFolder(str(tmp_path), allow_empty=True)
    assert ours.classes == theirs.classes
    assert [(str(p), t) for p, t in zip(ours.paths, ours.targets)] == [(p, t) for p, t in theirs.samples]


def test_flat_folder_is_unlabelled_and_empty_folder_is_an_error(tmp_path):
    _png(tmp_path / "flat" / "a.png")
    flat = open_image_set(tmp_path / "flat")
    assert not flat.labelled and len(flat.paths) == 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no image files"):
        open_image_set(tmp_path / "empty")
    with pytest.raises(InputError, match="does not exist"):
        open_image_set(tmp_path / "missing")


def test_digest_identifies_the_file_list(tmp_path):
    for name in ("a/1.png", "a/2.png", "b/3.png"):
        _png(tmp_path / name)
    images = open_image_set(tmp_path)
    import hashlib

    assert images.digest() == hashlib.sha256(b"a/1.png\na/2.png\nb/3.png").hexdigest()
    assert images.subset([0, 2]).digest() != images.digest()


def test_class_matching():
    assert class_index_map(["cat", "dog"], ["dog", "bird", "cat"]) == ([2, 0], "by name")
    assert class_index_map(["x", "y"], ["class_0", "class_1"])[0] == [0, 1]
    with pytest.raises(InputError, match="do not match"):
        class_index_map(["x", "y"], ["cat", "dog"])


def test_split_is_seeded_disjoint_and_complete():
    first, rest = split_indices(10, 7, seed=3)
    assert len(first) == 7 and sorted(first + rest) == list(range(10))
    assert split_indices(10, 7, seed=3) == (first, rest)


def test_criteria_per_precision():
    from alexnet_deploy.verify.parity import THRESHOLDS, failed_criteria

    assert failed_criteria(THRESHOLDS["fp32"], 5e-5, 0.999999, 1.0) == []
    assert len(failed_criteria(THRESHOLDS["fp32"], 2e-4, 0.999999, 1.0)) == 1
    assert failed_criteria(THRESHOLDS["int8"], 0.3, 0.98, 0.97) == []  # INT8 is not held to FP32's error bound
    assert any("top-1" in f for f in failed_criteria(THRESHOLDS["int8"], 0.3, 0.98, 0.90))
    assert failed_criteria(THRESHOLDS["fp16"], 0.0, float("nan"), 1.0)  # NaN never passes


def test_run_all_pads_fixed_batches_and_keeps_real_rows():
    from alexnet_deploy.runtimes.base import Runtime, RuntimeInfo

    class Fixed(Runtime):
        calls = []

        def _info_impl(self):
            return RuntimeInfo("fake", "cpu", "fp32", "input", (4, 3, 2, 2), min_batch=4, max_batch=4)

        def _run_impl(self, batch):
            self.calls.append(len(batch))
            return batch.reshape(len(batch), -1)[:, :2]

    data = np.arange(6 * 12, dtype=np.float32).reshape(6, 3, 2, 2)
    out = Fixed().run_all(data, 32)
    assert Fixed.calls == [4, 4] and out.shape == (6, 2)
    np.testing.assert_array_equal(out, data.reshape(6, -1)[:, :2])


def test_progress_adapters():
    from alexnet_deploy.progress import Progress, as_progress

    seen = []
    steps = as_progress(seen.append)
    steps("one")
    steps.start("two", 5)
    steps.advance(3)
    # A steps-only callback gets messages, not counted work: advance adds no message.
    assert seen == ["one", "two"]
    quiet = as_progress(None)
    quiet("ignored")
    assert isinstance(quiet, Progress)
    assert as_progress(quiet) is quiet  # a Progress passes through unwrapped


def test_cli_progress_bar_counts_advanced_units():
    """The CLI's Progress adapter moves rich's bar by exactly the units advanced."""
    from rich.console import Console
    from rich.progress import Progress as Bar

    from alexnet_deploy.cli.app import _RichProgress

    with Bar(console=Console(file=open("/dev/null", "w")), auto_refresh=False) as bar:
        progress = _RichProgress(bar)
        progress.start("images", 10)
        progress.advance(3)
        progress.advance()
        (task,) = bar.tasks
        assert (task.completed, task.total, task.description) == (4, 10, "images")
        progress("loading model 2")  # a message inside counted work (bench does this) keeps the count
        progress.advance(6)
        (task,) = bar.tasks
        assert (task.completed, task.total, task.description) == (10, 10, "loading model 2 …")
        progress("writing")  # after the counted work: an uncounted step, a spinner from zero
        (task,) = bar.tasks
        assert (task.completed, task.total, task.description) == (0, None, "writing …")
