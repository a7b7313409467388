"""Preprocessing equals torchvision's; labels from every file tutorials leave; metadata round trips."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from PIL import Image
from torchvision import transforms

from alexnet_deploy.errors import InputError
from alexnet_deploy.labels import read_labels
from alexnet_deploy.record import ModelRecord, Preprocessing, read_record, write_record
from alexnet_deploy.preprocess import preprocess_image


def _image(width, height, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB").convert(mode)


def _torchvision(spec: Preprocessing):
    interpolation = {"bilinear": transforms.InterpolationMode.BILINEAR, "bicubic": transforms.InterpolationMode.BICUBIC, "nearest": transforms.InterpolationMode.NEAREST}[spec.interpolation]
    size = spec.resize if spec.resize_mode == "shorter" else (spec.resize, spec.resize)
    return transforms.Compose([transforms.Resize(size, interpolation=interpolation), transforms.CenterCrop(spec.crop), transforms.ToTensor(), transforms.Normalize(spec.mean, spec.std)])


SPECS = [
    Preprocessing(256, 227),  # seed 000
    Preprocessing(224, 224, mean=(0.4915, 0.4823, 0.4468), std=(1.0, 1.0, 1.0)),  # seed 001
    Preprocessing(224, 224, mean=(0.4637, 0.4248, 0.3011), std=(0.2502, 0.2219, 0.2292), resize_mode="exact"),  # seed 002
    Preprocessing(224, 224, mean=(0.5,) * 3, std=(0.5,) * 3, resize_mode="exact"),  # seed 003
    Preprocessing(256, 224, interpolation="bicubic"),
    Preprocessing(100, 120),  # crop larger than the resized image: torchvision pads
]
SIZES = [(500, 375), (375, 500), (32, 32), (257, 255), (640, 641)]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.describe()[:40])
@pytest.mark.parametrize("size", SIZES, ids=str)
def test_preprocessing_equals_torchvision(spec, size):
    image = _image(*size, seed=size[0])
    want = _torchvision(spec)(image).numpy()
    got = preprocess_image(image, spec)
    assert got.shape == want.shape and got.dtype == np.float32
    assert np.abs(got - want).max() <= 1e-6


def test_grayscale_and_rgba_are_converted_like_pil_convert(tmp_path):
    spec = Preprocessing(256, 224)
    for mode in ("L", "RGBA", "P"):
        image = _image(300, 200, mode=mode)
        path = tmp_path / f"img_{mode}.png"
        image.save(path)
        want = _torchvision(spec)(Image.open(path).convert("RGB")).numpy()
        assert np.abs(preprocess_image(path, spec) - want).max() <= 1e-6


def test_labels_from_class_indices_json(tmp_path):
    path = tmp_path / "class_indices.json"
    path.write_text(json.dumps({"0": "daisy", "1": "dandelion", "2": "roses", "3": "sunflowers", "4": "tulips"}, indent=4))
    assert read_labels(path) == ["daisy", "dandelion", "roses", "sunflowers", "tulips"]


def test_labels_from_class_to_idx_list_txt_and_imagefolder(tmp_path):
    (tmp_path / "c2i.json").write_text(json.dumps({"cat": 1, "ant": 0}))
    assert read_labels(tmp_path / "c2i.json") == ["ant", "cat"]
    (tmp_path / "list.json").write_text(json.dumps(["x", "y"]))
    assert read_labels(tmp_path / "list.json") == ["x", "y"]
    (tmp_path / "labels.txt").write_text("tench\n\ngoldfish\r\nwhite shark\n")
    assert read_labels(tmp_path / "labels.txt") == ["tench", "goldfish", "white shark"]
    root = tmp_path / "train"
    for name in ("tulips", "daisy", "roses"):
        (root / name).mkdir(parents=True)
    (root / ".cache").mkdir()
    from torchvision.datasets.folder import find_classes

    assert read_labels(root) == find_classes(str(root))[0] == [".cache", "daisy", "roses", "tulips"]


@pytest.mark.parametrize("content", ['{"0": "a", "2": "b"}', "{not json", '{"a": "b"}', ""])
def test_bad_label_files(tmp_path, content):
    path = tmp_path / "labels.json"
    path.write_text(content)
    with pytest.raises(InputError):
        read_labels(path)


def _tiny_onnx():
    node = onnx.helper.make_node("Identity", ["input"], ["logits"])
    graph = onnx.helper.make_graph([node], "g", [onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 3])], [onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1, 3])])
    return onnx.helper.make_model(graph)


def test_record_round_trip_through_a_saved_file(tmp_path):
    record = ModelRecord(("雏菊", "tulip", 'say "hi"'), Preprocessing(256, 227, interpolation="bicubic"), "caffe-227", "ab" * 32, "0.1.0", "fp32", {"opset": 18, "lrn": []})
    model = _tiny_onnx()
    entry = model.metadata_props.add()
    entry.key, entry.value = "author", "someone"
    write_record(model, record)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    loaded = onnx.load(str(path))
    assert read_record(loaded) == record
    assert {p.key: p.value for p in loaded.metadata_props}["author"] == "someone"


def test_exported_file_carries_the_record(half_width_onnx, half_width):
    from alexnet_deploy.fileio import sha256_file

    record = read_record(onnx.load(str(half_width_onnx)))
    assert record.labels == ("daisy", "dandelion", "roses", "sunflowers", "tulips")
    assert record.preprocessing == Preprocessing(224, 224, mean=(0.5,) * 3, std=(0.5,) * 3, resize_mode="exact")
    assert record.layout == "half-width" and record.precision == "fp32"
    assert record.source_sha256 == sha256_file(half_width[0])


def test_missing_and_newer_records_are_clear_errors():
    with pytest.raises(InputError, match="no alexnet-deploy metadata"):
        read_record(_tiny_onnx())
    model = _tiny_onnx()
    write_record(model, ModelRecord(("a",), Preprocessing(), "x"))
    for prop in model.metadata_props:
        if prop.key == "alexnet_deploy.schema":
            prop.value = "99"
    with pytest.raises(InputError, match="newer"):
        read_record(model)


def test_preprocessing_overrides_reach_the_file(cli, half_width, tmp_path):
    out = tmp_path / "o.onnx"
    cli.ok("export", half_width[0], "-o", out, "--resize", "240", "--mean", "0.4,0.4,0.4", "--std", "0.2,0.2,0.2", "--no-verify")
    spec = read_record(onnx.load(str(out), load_external_data=False)).preprocessing
    assert (spec.resize, spec.crop, spec.mean, spec.std) == (240, 224, (0.4, 0.4, 0.4), (0.2, 0.2, 0.2))


# Center-crop offsets are round((size - crop) / 2) with Python's round-half-to-even: an odd
# difference d gives d/2 = k + 0.5, which rounds up only when k is odd (d % 4 == 3), so
# floor-instead-of-round shows only on those, ceil-instead-of-round only on d % 4 == 1.
# Resize's long side is int(resize * long / short): truncation shows only when that is not
# a whole number. Crops larger than the image pad (d < 0, odd or even). The grid below is
# small images with crop 10 so that every path occurs in both axes; the test checks that
# it does, using torchvision's own Resize output size, before comparing pixels.
ROUNDING_SPECS = [Preprocessing(r, 10) for r in (7, 8, 10, 11, 12, 13)] + [Preprocessing(r, 10, resize_mode="exact") for r in (11, 13, 14, 15)]
ROUNDING_SIZES = [(w, h) for w in (9, 13, 14, 15, 16, 23, 30) for h in (9, 13, 14, 15, 16, 23, 30)]


def _rounding_path(difference: int) -> str:
    if difference < 0:
        return f"pad-{'odd' if difference % 2 else 'even'}"
    return {0: "even", 2: "even", 1: "half-down", 3: "half-up"}[difference % 4]


def test_center_crop_and_resize_rounding_equal_torchvision_on_every_path():
    covered: set[tuple[str, str]] = set()
    truncated_long_side = False
    mismatches = []
    for spec in ROUNDING_SPECS:
        transform = _torchvision(spec)
        resize = transform.transforms[0]
        for width, height in ROUNDING_SIZES:
            image = _image(width, height, seed=width * 100 + height)
            resized_w, resized_h = resize(image).size  # torchvision's own output size
            covered.add(("x", _rounding_path(resized_w - spec.crop)))
            covered.add(("y", _rounding_path(resized_h - spec.crop)))
            if spec.resize_mode == "shorter" and width != height:
                short, long = min(width, height), max(width, height)
                truncated_long_side |= (spec.resize * long) % short != 0
            want = transform(image).numpy()
            got = preprocess_image(image, spec)
            if got.shape != want.shape or np.abs(got - want).max() > 1e-6:
                mismatches.append((spec.describe(), (width, height), (resized_w, resized_h)))
    paths = {"even", "half-down", "half-up", "pad-odd", "pad-even"}
    assert covered == {(axis, p) for axis in "xy" for p in paths}, "the grid no longer exercises every rounding path"
    assert truncated_long_side
    assert not mismatches, mismatches[:5]


def test_preprocess_accepts_pil_images_and_rgb_arrays_like_torchvision():
    spec = Preprocessing(20, 16)
    gray = _image(30, 25, seed=4, mode="L")
    want = _torchvision(spec)(gray.convert("RGB")).numpy()
    assert np.abs(preprocess_image(gray, spec) - want).max() <= 1e-6  # a PIL image in another mode is converted
    array = np.asarray(_image(30, 25, seed=5))
    want = _torchvision(spec)(Image.fromarray(array, "RGB")).numpy()
    assert np.abs(preprocess_image(array, spec) - want).max() <= 1e-6
    for bad in (array[..., 0], np.concatenate([array, array[..., :1]], axis=2), array.astype(np.float32), array[None]):
        with pytest.raises(InputError, match=r"HxWx3 uint8 \(RGB\), got shape") as error:
            preprocess_image(bad, spec)
        assert error.value.fix == "convert it, e.g. np.asarray(pil_image.convert('RGB'))"  # the hint users see


def test_preprocess_batch_list_images_and_load_images(tmp_path):
    from alexnet_deploy.preprocess import list_images, load_images, preprocess_batch

    spec = Preprocessing(20, 16)
    (tmp_path / "sub").mkdir()
    paths = [tmp_path / "b.png", tmp_path / "A.JPG", tmp_path / "sub" / "c.bmp"]
    for i, path in enumerate(paths):
        _image(24 + i, 21, seed=i).save(path, format={".png": "PNG", ".jpg": "JPEG", ".bmp": "BMP"}[path.suffix.lower()])
    (tmp_path / "notes.txt").write_text("not an image")
    broken = tmp_path / "sub" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n but not really")
    # Suffixes match case-insensitively, non-images are left out, the order is sorted.
    assert list_images(tmp_path) == sorted([*paths, broken])
    assert list_images(tmp_path, recursive=False) == sorted(paths[:2])
    # Each error carries the one-line fix the CLI prints under it.
    with pytest.raises(InputError, match="does not exist") as error:
        list_images(tmp_path / "missing")
    assert error.value.fix == "check the path"
    with pytest.raises(InputError, match="is not a folder") as error:
        list_images(paths[0])
    assert error.value.fix == "give a directory of images"
    good = sorted(paths)
    batch = preprocess_batch(good, spec)
    want = np.stack([_torchvision(spec)(Image.open(p).convert("RGB")).numpy() for p in good])
    assert batch.shape == (3, 3, 16, 16) and np.abs(batch - want).max() <= 1e-6
    advanced = []
    loaded, used, skipped = load_images(sorted([*paths, broken]), spec, advance=advanced.append)
    assert used == good and skipped == [broken] and sum(advanced) == 4  # one unit per file, skipped ones too
    assert np.abs(loaded - want).max() <= 1e-6
    empty, used, skipped = load_images([broken], spec)
    assert empty.shape == (0, 3, 16, 16) and empty.dtype == np.float32 and used == [] and skipped == [broken]
    with pytest.raises(InputError, match="does not exist or is not a file") as error:
        preprocess_image(tmp_path / "nope.png", spec)
    assert error.value.fix == "check the path"
    with pytest.raises(InputError, match=r"cannot be decoded \(UnidentifiedImageError\)") as error:
        preprocess_image(broken, spec)
    assert error.value.fix == "remove or replace the file"
