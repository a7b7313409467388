"""Fast checks of the pieces under quantize/eval/verify: image sets, class matching, criteria, chunked runs."""

from __future__ import annotations

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








