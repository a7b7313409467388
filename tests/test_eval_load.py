"""``evaluate``'s model loading (ONNX files and checkpoints) and its confusion-matrix PNG.

Checkpoints: the resolver is replaced by one that hands back a tiny torch module (a strided
convolution and a linear layer), so a checkpoint is scored through the real torch runtime in
seconds; the reference is that module's own forward on torchvision's transforms of the same
files. The PNG is read back with PIL and its pixels compared with the shading the docstring
documents, computed here from the matrix.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from alexnet_deploy.errors import InputError
from alexnet_deploy.record import Preprocessing, PreprocessingOverrides
from tiny_model import CLASSES, tiny_model, write_images

torch = pytest.importorskip("torch")

SIZE = 16
SPEC = Preprocessing(resize=20, crop=SIZE, mean=(0.5, 0.45, 0.4), std=(0.25, 0.25, 0.3))


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.onnx")


def _module(classes: int = 3, size: int = SIZE):
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 4, stride=4), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * (size // 4) ** 2, classes),
    ).eval()


@pytest.fixture
def checkpoint(tmp_path, monkeypatch):
    """A .pth path whose resolution gives the tiny module; records the options it was resolved with."""
    import alexnet_deploy.checkpoints.resolve as resolve

    path = tmp_path / "model.pth"
    path.write_bytes(b"resolved by the fake below")
    state = SimpleNamespace(labels=list(CLASSES), resolved=[], module=_module())

    def fake_resolve(model_path, options):
        state.resolved.append((Path(model_path), options))
        size = options.input_size or SIZE
        return SimpleNamespace(reference=state.module if size == SIZE else _module(size=size), input_size=size, preprocessing=SPEC,
                               checkpoint=SimpleNamespace(labels=state.labels), num_classes=3)

    monkeypatch.setattr(resolve, "resolve_model", fake_resolve)
    state.path = path
    return state


def _folder(root: Path, per_class: int = 3) -> list[tuple[Path, int]]:
    for k, name in enumerate(CLASSES):
        write_images(root / name, per_class, seed=k)
    return [(path, k) for k, name in enumerate(sorted(CLASSES)) for path in sorted((root / name).iterdir())]


def _torchvision_logits(module, files, spec: Preprocessing):
    from torchvision import transforms

    pipeline = transforms.Compose([transforms.Resize(spec.resize), transforms.CenterCrop(spec.crop), transforms.ToTensor(), transforms.Normalize(spec.mean, spec.std)])
    batch = torch.stack([pipeline(Image.open(path).convert("RGB")) for path, _ in files])
    with torch.no_grad():
        return module(batch).numpy()


def test_a_checkpoint_is_scored_by_its_own_forward_on_torchvisions_transforms(checkpoint, tmp_path):
    from alexnet_deploy.checkpoints.options import ModelOptions
    from alexnet_deploy.evaluate import evaluate

    files = _folder(tmp_path / "val")
    options = ModelOptions()
    report = evaluate(checkpoint.path, tmp_path / "val", model_options=options, keep_predictions=True)
    logits = _torchvision_logits(checkpoint.module, files, SPEC)
    assert report.runtime == "torch" and report.precision == "fp32" and report.labels == list(CLASSES)
    assert report.predictions == logits.argmax(1).tolist()
    assert report.truths == [k for _, k in files]
    assert report.top1 == pytest.approx(np.mean(logits.argmax(1) == np.array([k for _, k in files])))
    assert checkpoint.resolved == [(checkpoint.path, options)]  # the caller's options, as given


def test_a_checkpoint_without_options_is_resolved_with_the_defaults(checkpoint, tmp_path):
    from alexnet_deploy.checkpoints.options import ModelOptions
    from alexnet_deploy.evaluate import evaluate

    _folder(tmp_path / "val", 1)
    evaluate(checkpoint.path, tmp_path / "val", runtime="torch")
    assert checkpoint.resolved == [(checkpoint.path, ModelOptions())]


@pytest.mark.parametrize("labels", [None, [], ["x", "y"]])
def test_a_checkpoint_without_one_label_per_class_is_labelled_class_0_to_n(checkpoint, tmp_path, labels):
    from alexnet_deploy.evaluate import evaluate

    checkpoint.labels = labels
    for k in range(3):
        write_images(tmp_path / "val" / f"class_{k}", 1, seed=k)
    report = evaluate(checkpoint.path, tmp_path / "val")
    assert report.labels == ["class_0", "class_1", "class_2"]
    assert report.matched == "by name"


def test_crop_override_on_a_checkpoint_sets_its_input_size_and_scales_the_resize(checkpoint, tmp_path):
    from alexnet_deploy.evaluate import evaluate

    files = _folder(tmp_path / "val", 2)
    overrides = PreprocessingOverrides(crop=24)
    report = evaluate(checkpoint.path, tmp_path / "val", preprocessing=overrides, keep_predictions=True)
    ((_, options),) = checkpoint.resolved
    assert options.input_size == 24
    # Resize scales with the crop (20 * 24 / 16 = 30); mean and std stay the layout's.
    expected = Preprocessing(resize=30, crop=24, mean=SPEC.mean, std=SPEC.std)
    logits = _torchvision_logits(_module(size=24), files, expected)
    assert report.predictions == logits.argmax(1).tolist()


def test_an_explicit_input_size_wins_over_the_crop_override(checkpoint, tmp_path):
    from alexnet_deploy.checkpoints.options import ModelOptions
    from alexnet_deploy.evaluate import evaluate

    _folder(tmp_path / "val", 1)
    with pytest.raises(InputError) as err:  # the model takes 16 px, the preprocessing crops 24
        evaluate(checkpoint.path, tmp_path / "val", model_options=ModelOptions(input_size=SIZE), preprocessing=PreprocessingOverrides(crop=24))
    assert checkpoint.resolved[0][1].input_size == SIZE
    assert err.value.problem == "the model takes 16x16 input but its preprocessing crops to 24."


def test_mean_and_std_overrides_on_a_checkpoint_reach_the_preprocessing(checkpoint, tmp_path):
    from alexnet_deploy.evaluate import evaluate

    files = _folder(tmp_path / "val", 3)
    overrides = PreprocessingOverrides(resize=SIZE, mean=(0.1, 0.2, 0.3), std=(0.9, 0.8, 0.7))
    report = evaluate(checkpoint.path, tmp_path / "val", preprocessing=overrides, keep_predictions=True)
    assert checkpoint.resolved[0][1].input_size is None  # no crop given: the layout decides
    expected = Preprocessing(resize=SIZE, crop=SIZE, mean=(0.1, 0.2, 0.3), std=(0.9, 0.8, 0.7))
    assert report.predictions == _torchvision_logits(checkpoint.module, files, expected).argmax(1).tolist()


@pytest.mark.parametrize("runtime, engine", [("ort", "onnxruntime"), ("openvino", "OpenVINO"), ("openvino-bf16", "OpenVINO")])
def test_an_onnx_runtime_on_a_checkpoint_says_to_export_first(checkpoint, tmp_path, runtime, engine):
    from alexnet_deploy.evaluate import evaluate

    _folder(tmp_path / "val", 1)
    with pytest.raises(InputError) as err:
        evaluate(checkpoint.path, tmp_path / "val", runtime=runtime)
    assert err.value.problem == f"{checkpoint.path} is a PyTorch checkpoint; {engine} needs an ONNX file."
    assert err.value.fix == f"use --runtime torch, or export it first: alexnet export {checkpoint.path}"
    assert checkpoint.resolved == []


def test_an_unknown_runtime_is_refused_for_both_kinds(checkpoint, onnx_model, tmp_path):
    from alexnet_deploy.evaluate import evaluate

    _folder(tmp_path / "val", 1)
    for model in (checkpoint.path, onnx_model):
        with pytest.raises(InputError) as err:
            evaluate(model, tmp_path / "val", runtime="trt")
        assert err.value.problem == "unknown runtime 'trt' for eval."
        assert err.value.fix == "use --runtime ort/openvino/openvino-bf16 (ONNX files) or --runtime torch (checkpoints)"


def test_a_tensorrt_engine_is_refused_with_its_onnx_as_the_fix(tmp_path):
    from alexnet_deploy.evaluate import evaluate

    _folder(tmp_path / "val", 1)
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"engine bytes")
    with pytest.raises(InputError) as err:
        evaluate(engine, tmp_path / "val")
    assert err.value.problem == f"{engine} is a TensorRT engine; eval runs ONNX models and checkpoints."
    assert err.value.fix == "evaluate the .onnx the engine was built from"


def test_an_onnx_file_refuses_the_torch_runtime_and_preprocessing_overrides(onnx_model, tmp_path):
    from alexnet_deploy.evaluate import evaluate

    _folder(tmp_path / "val", 1)
    with pytest.raises(InputError) as err:
        evaluate(onnx_model, tmp_path / "val", runtime="torch")
    assert err.value.problem == f"{onnx_model} is an ONNX model; the torch runtime runs checkpoints."
    assert err.value.fix == "use --runtime ort or openvino, or pass the .pth checkpoint"
    for field in ("resize", "crop", "mean", "std"):
        value = (0.5, 0.5, 0.5) if field in ("mean", "std") else 20
        with pytest.raises(InputError) as err:
            evaluate(onnx_model, tmp_path / "val", preprocessing=PreprocessingOverrides(**{field: value}))
        assert err.value.problem == "--resize/--crop/--mean/--std apply to checkpoints; an ONNX model carries its own preprocessing."
        assert err.value.fix == "drop them, or re-export with the right values"
    # Overrides that are all unset are no overrides.
    assert evaluate(onnx_model, tmp_path / "val", preprocessing=PreprocessingOverrides()).n == 3


def test_an_onnx_file_is_scored_with_its_records_labels_and_precision(onnx_model, tmp_path):
    from alexnet_deploy.evaluate import evaluate

    _folder(tmp_path / "val", 1)
    report = evaluate(onnx_model, tmp_path / "val")
    assert report.runtime == "ort"  # the default for an ONNX file
    assert report.labels == list(CLASSES) and report.precision == "fp32"
    pytest.importorskip("openvino")
    assert evaluate(onnx_model, tmp_path / "val", runtime="openvino").runtime == "openvino"


def test_eval_without_torch_names_the_extra_for_checkpoints(checkpoint, tmp_path, monkeypatch):
    import builtins

    from alexnet_deploy.errors import DependencyError
    from alexnet_deploy.evaluate import evaluate

    _folder(tmp_path / "val", 1)
    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("No module named 'torch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    monkeypatch.delitem(__import__("sys").modules, "torch")
    with pytest.raises(DependencyError) as err:
        evaluate(checkpoint.path, tmp_path / "val")
    assert err.value.problem.startswith("Evaluating checkpoints needs the 'torch' package, which is not installed")
    assert err.value.fix == "pip install 'alexnet-deploy[torch]'"


def test_a_missing_model_and_a_damaged_record_name_the_file(tmp_path):
    from alexnet_deploy.evaluate import evaluate

    _folder(tmp_path / "val", 1)
    missing = tmp_path / "missing.onnx"
    with pytest.raises(InputError) as err:
        evaluate(missing, tmp_path / "val")
    assert err.value.problem == f"model {missing} does not exist."
    damaged = tiny_model(tmp_path / "damaged.onnx", preprocessing={"crop": "x"})
    with pytest.raises(InputError) as err:
        evaluate(damaged, tmp_path / "val")
    assert err.value.problem.startswith(f"{damaged} has damaged alexnet-deploy metadata")


# --- write_confusion_png -------------------------------------------------------------------


def _report(confusion, labels, top1=0.5, n=None, model="runs/model.onnx"):
    from alexnet_deploy.evaluate import EvalReport

    confusion = np.asarray(confusion)
    return EvalReport(model=model, runtime="ort", precision="fp32", n=int(confusion.sum()) if n is None else n, top1=top1, top5=1.0, labels=labels,
                      per_class={}, confusion=confusion.tolist(), images_per_s=1.0, model_images_per_s=1.0, batch=1, matched="by name")


def _cells(image: Image.Image, size: int, cell: int, margin: int, top: int):
    """The colour at the top-left inner pixel of each cell (away from the drawn count)."""
    pixels = image.convert("RGB")
    return [[pixels.getpixel((margin + c * cell + 1, top + r * cell + 1)) for c in range(size)] for r in range(size)]


def _shade(share: float, diagonal: bool):
    return (int(255 - 200 * share), int(255 - 120 * share), 255) if diagonal else (255, int(255 - 200 * share), int(255 - 200 * share))


def test_the_png_shades_each_cell_by_its_share_of_the_true_class_and_leaves_out_absent_classes(tmp_path):
    from PIL import ImageFont

    from alexnet_deploy.evaluate import write_confusion_png

    labels = ["cat", "dog", "absent", "fox", "eel"]
    # 'absent' occurs nowhere; 'fox' is a true class and a prediction; 'eel' only a prediction.
    confusion = [[6, 2, 0, 1, 0], [1, 3, 0, 0, 2], [0, 0, 0, 0, 0], [0, 4, 0, 0, 0], [0, 0, 0, 0, 0]]
    out = write_confusion_png(_report(confusion, labels, top1=9 / 19), tmp_path / "c.png")
    assert out == tmp_path / "c.png"
    image = Image.open(out)
    assert image.format == "PNG"
    present = [[6, 2, 1, 0], [1, 3, 0, 2], [0, 4, 0, 0], [0, 0, 0, 0]]  # rows and columns of cat, dog, fox, eel
    font = ImageFont.load_default()
    cell = min(48, 900 // 4)
    margin = max(int(font.getlength(name)) for name in ("cat", "dog", "fox", "eel")) + 16
    title = "model.onnx: top-1 47.4% on 19 images (rows: true, columns: predicted)"
    assert image.size == (max(margin + cell * 4 + 8, int(font.getlength(title)) + 16), 28 + margin + cell * 4 + 8)
    shades = _cells(image, 4, cell, margin, 28 + margin)
    for r, row in enumerate(present):
        total = sum(row)
        for c, count in enumerate(row):
            assert shades[r][c] == _shade(count / total if total else 0.0, r == c), (r, c)


def test_a_class_with_no_images_has_white_cells_not_a_division_by_zero(tmp_path):
    from PIL import ImageFont

    from alexnet_deploy.evaluate import write_confusion_png

    # 'b' occurs only as a prediction: its row is all zeros.
    out = write_confusion_png(_report([[1, 3], [0, 0]], ["a", "b"]), tmp_path / "c.png")
    image = Image.open(out)
    font = ImageFont.load_default()
    margin = max(int(font.getlength(name)) for name in ("a", "b")) + 16
    shades = _cells(image, 2, 48, margin, 28 + margin)
    assert shades[1] == [_shade(0.0, False), _shade(0.0, True)]
    assert shades[0] == [_shade(0.25, True), _shade(0.75, False)]
    # A class with a single image is shaded by it like any other.
    single = Image.open(write_confusion_png(_report([[1, 3], [1, 0]], ["a", "b"]), tmp_path / "d.png"))
    assert _cells(single, 2, 48, margin, 28 + margin)[1] == [_shade(1.0, False), _shade(0.0, True)]


def test_many_classes_get_small_cells_without_text(tmp_path):
    from alexnet_deploy.evaluate import write_confusion_png

    size = 100
    confusion = np.eye(size, dtype=int) * 3
    confusion[0, 1] = 1
    out = write_confusion_png(_report(confusion, [f"class_{i}" for i in range(size)]), tmp_path / "c.png")
    image = Image.open(out)
    cell, margin = 9, 8  # 900 // 100, and no room for names
    assert image.size == (margin + cell * size + 8, 28 + margin + cell * size + 8)  # wider than the title
    shades = _cells(image, size, cell, margin, 28 + margin)
    assert shades[0][0] == _shade(0.75, True) and shades[0][1] == _shade(0.25, False) and shades[5][5] == _shade(1.0, True)
    huge = write_confusion_png(_report(np.eye(400, dtype=int), [f"c{i}" for i in range(400)]), tmp_path / "h.png")
    assert Image.open(huge).height == 28 + 8 + 4 * 400 + 8  # cells never smaller than 4 px


def _dark(pixels, x0, x1, y0, y1) -> int:
    return int((pixels[y0:y1, x0:x1] < 128).sum())


def test_names_counts_and_title_are_drawn_where_they_belong_when_the_cells_are_large(tmp_path):
    from PIL import ImageFont

    from alexnet_deploy.evaluate import write_confusion_png

    labels = ["alpha", "beta", "gamma"]
    confusion = [[5, 0, 1], [2, 7, 0], [0, 0, 3]]
    pixels = np.asarray(Image.open(write_confusion_png(_report(confusion, labels), tmp_path / "a.png")).convert("L"))
    font = ImageFont.load_default()
    cell, margin = 48, max(int(font.getlength(name)) for name in labels) + 16
    top = 28 + margin
    assert pixels.shape[0] == top + 3 * cell + 8
    assert _dark(pixels, 0, pixels.shape[1], 0, 28) > 50  # the title
    for i in range(3):
        assert _dark(pixels, 0, margin, top + i * cell, top + (i + 1) * cell) > 10, f"row name {i}"
        assert _dark(pixels, margin + i * cell, margin + (i + 1) * cell, 28, top) > 10, f"column name {i}"
        for j in range(3):
            inside = _dark(pixels, margin + j * cell + 2, margin + (j + 1) * cell - 2, top + i * cell + 2, top + (i + 1) * cell - 2)
            assert (inside > 0) == (confusion[i][j] > 0), (i, j)  # a count where there is one, a blank cell where 0
    assert _dark(pixels, 0, pixels.shape[1], top + 3 * cell, pixels.shape[0]) == 0  # nothing below the grid
    assert _dark(pixels, 0, margin, 28, top) == 0  # the corner above the row names stays empty
    # A zero matrix has no present class: the title, an empty name margin (16 px) and no cells.
    without = Image.open(write_confusion_png(_report([[0, 0], [0, 0]], ["a", "b"], n=0), tmp_path / "b.png"))
    assert without.size[1] == 28 + 16 + 0 + 8


@pytest.mark.parametrize("size, cell, text", [(37, 24, True), (38, 23, False), (53, 16, False)])
def test_cells_shrink_with_the_class_count_and_text_needs_24_pixels(tmp_path, size, cell, text):
    from PIL import ImageFont

    from alexnet_deploy.evaluate import write_confusion_png

    labels = [f"c{i}" for i in range(size)]
    image = Image.open(write_confusion_png(_report(np.eye(size, dtype=int) * 2, labels), tmp_path / "c.png"))
    font = ImageFont.load_default()
    margin = max(int(font.getlength(name)) for name in labels) + 16 if text else 8
    title = f"model.onnx: top-1 50.0% on {2 * size} images (rows: true, columns: predicted)"
    assert image.size == (max(margin + cell * size + 8, int(font.getlength(title)) + 16), 28 + margin + cell * size + 8)


def test_the_png_replaces_a_file_only_when_complete(tmp_path, monkeypatch):
    from alexnet_deploy.evaluate import write_confusion_png

    target = tmp_path / "c.png"
    target.write_bytes(b"old")

    def broken_save(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError):
        write_confusion_png(_report([[1]], ["a"]), target)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png"]


def _ink(rgb: np.ndarray, background) -> np.ndarray:
    """Where black text covers more than half of a pixel drawn over ``background`` (RGB)."""
    return rgb.astype(np.float64).sum(axis=2) < 0.5 * float(sum(background))


def _reference_ink(text: str) -> int:
    """How many pixels PIL's default font covers more than half of for ``text`` (drawn on white by the test)."""
    from PIL import ImageDraw, ImageFont

    canvas = Image.new("RGB", (400, 60), "white")
    ImageDraw.Draw(canvas).text((20, 20), text, fill="black", font=ImageFont.load_default())
    return int(_ink(np.asarray(canvas), (255, 255, 255)).sum())


def _box(mask: np.ndarray):
    ys, xs = np.nonzero(mask)
    return xs.min(), xs.max(), ys.min(), ys.max()


def test_each_count_and_name_is_the_right_text_centred_in_its_cell_and_the_grid_has_its_lines(tmp_path):
    """Text is checked by the pixels PIL's own font covers for the expected string (so a wrong or clipped string,
    or one drawn off its cell, fails) and by where its ink sits; cell outlines by their colour."""
    from PIL import ImageFont

    from alexnet_deploy.evaluate import write_confusion_png

    labels = ["alpha", "beta", "gamma"]
    confusion = [[5, 0, 1], [2, 17, 0], [0, 0, 3]]
    rgb = np.asarray(Image.open(write_confusion_png(_report(confusion, labels), tmp_path / "a.png")).convert("RGB"))
    font = ImageFont.load_default()
    cell, margin = 48, max(int(font.getlength(name)) for name in labels) + 16
    top = 28 + margin
    outline = (220, 220, 220)
    for r in range(3):
        for c in range(3):
            x0, y0 = margin + c * cell, top + r * cell
            # The outline: the cell's own left/top edge and its right/bottom edge, each one pixel wide.
            for x, y in ((x0, y0 + 5), (x0 + cell - 1, y0 + 5), (x0 + 5, y0), (x0 + 5, y0 + cell - 1)):
                assert tuple(rgb[y, x]) == outline, (r, c, x - x0, y - y0)
            inner = rgb[y0 + 1:y0 + cell - 1, x0 + 1:x0 + cell - 1]
            background = tuple(int(v) for v in inner[0, 0])
            assert tuple(inner[0, 1]) == tuple(inner[1, 0]) == background  # a fill, not a line, inside the outline
            ink = _ink(inner, background)
            if not confusion[r][c]:
                assert not ink.any(), (r, c)
                continue
            assert int(ink.sum()) == _reference_ink(str(confusion[r][c])), (r, c)
            left, right, upper, lower = _box(ink)
            assert abs((left + right) / 2 - (cell - 2) / 2) <= 2 and abs((upper + lower) / 2 - (cell - 2) / 2) <= 2, (r, c, _box(ink))
    white = (255, 255, 255)
    assert not _ink(rgb[top:top + 3 * cell, margin + 3 * cell:], white).any() and (rgb[top:, margin + 3 * cell:] == 255).all()  # nothing right of the grid
    for i, name in enumerate(labels):
        row = _ink(rgb[top + i * cell:top + (i + 1) * cell, :margin], white)  # the row's name, left of the grid
        assert int(row.sum()) == _reference_ink(name), name
        left, right, upper, lower = _box(row)
        assert left >= 8 and right < margin and abs((upper + lower) / 2 - cell / 2) <= 2, (name, _box(row))
        column = _ink(rgb[28:top, margin + i * cell:margin + (i + 1) * cell], white)  # the column's name, turned, above it
        assert int(column.sum()) == _reference_ink(name), name
        left, right, upper, lower = _box(column)
        assert lower - upper > right - left, f"{name} is not turned upright"
        assert abs((left + right) / 2 - cell / 2) <= 2 and top - 28 - 9 <= lower < top - 28 - 4, (name, _box(column))
