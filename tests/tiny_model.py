"""A tiny classifier ONNX file with an alexnet-deploy record, built with onnx.helper (no torch, no export).

For tests of what surrounds a model (image pipeline, record checks, serving, packaging), where
any classifier will do and a full AlexNet export would only cost time. Its logits depend on
every pixel (a strided convolution, then a fully connected layer), so a wrong preprocessing
shows in them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SIZE = 16
CLASSES = ("apple", "banana", "cherry")


def tiny_model(path: Path, size: int = SIZE, classes=CLASSES, preprocessing: dict | None = None, labels=None, external_data: bool = False) -> Path:
    """Write the model to ``path``; ``preprocessing`` overrides fields of the record's (raw JSON values,
    so a test can write what export never would); ``labels`` replaces the record's label list."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from alexnet_deploy.record import PREFIX, ModelRecord, Preprocessing, write_record

    rng = np.random.default_rng(7)
    weights = {
        "w1": rng.normal(0, 0.3, (4, 3, 4, 4)), "b1": rng.normal(0, 0.1, 4),
        "w2": rng.normal(0, 0.3, (len(classes), 4 * (size // 4) ** 2)), "b2": rng.normal(0, 0.1, len(classes)),
    }
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["conv"], strides=[4, 4], name="conv"),
        helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
        helper.make_node("Flatten", ["relu"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "w2", "b2"], ["logits"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(classes)])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    spec = Preprocessing(resize=size + size // 4, crop=size, mean=(0.5, 0.45, 0.4), std=(0.25, 0.25, 0.3))
    write_record(proto, ModelRecord(labels=tuple(classes), preprocessing=spec, layout="tiny"))
    for prop in proto.metadata_props:  # raw edits, as a damaged or hostile file would carry them
        if prop.key == PREFIX + "preprocessing" and preprocessing:
            prop.value = json.dumps({**json.loads(prop.value), **preprocessing})
        if prop.key == PREFIX + "labels" and labels is not None:
            prop.value = json.dumps(list(labels))
    onnx.checker.check_model(proto)
    path = Path(path)
    if external_data:
        onnx.save(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=path.name + ".data", size_threshold=0)
    else:
        onnx.save(proto, str(path))
    return path


def write_images(folder: Path, count: int, seed: int = 0, sizes=((40, 30), (23, 57), (64, 64), (17, 19))) -> list[Path]:
    """``count`` small JPEG/PNG images of varied sizes and modes (L, RGB, RGBA, P) under ``folder``."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        width, height = sizes[i % len(sizes)]
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")
        image = [image, image.convert("L"), image.convert("RGBA"), image.convert("P")][i % 4]
        suffix = ".jpg" if image.mode in ("RGB", "L") and i % 3 == 0 else ".png"
        path = folder / f"img{i:04d}{suffix}"
        image.save(path)
        paths.append(path)
    return paths


def torchvision_input(path_or_image, spec) -> np.ndarray:
    """torchvision's own Resize/CenterCrop/ToTensor/Normalize of one image (the independent reference)."""
    from PIL import Image
    from torchvision import transforms as T

    resize = T.Resize(spec.resize) if spec.resize_mode == "shorter" else T.Resize((spec.resize, spec.resize))
    transform = T.Compose([resize, T.CenterCrop(spec.crop), T.ToTensor(), T.Normalize(spec.mean, spec.std)])
    image = path_or_image if isinstance(path_or_image, Image.Image) else Image.open(path_or_image)
    with image:
        return transform(image.convert("RGB")).numpy()


def black_png(path: Path, width: int, height: int) -> Path:
    """A black grayscale PNG of ``width`` x ``height``, compressed row by row (tiny files for huge pixel counts)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    compressor = zlib.compressobj(9)
    row = b"\0" * (width + 1)  # filter byte + one gray byte per pixel
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path
