"""``Classifier``: an exported model inside another application (onnxruntime or OpenVINO, no torch).

Labels and preprocessing come from the ONNX file's metadata, so the app passes images and
gets label names back. FP32, FP16 and INT8 files all work. One instance may be shared by
threads: onnxruntime sessions run concurrently, the OpenVINO runtime gives each thread its
own infer request on one compiled model, preprocessing keeps no state.
"""

from __future__ import annotations

from pathlib import Path
import numpy as np

from alexnet_deploy.errors import InputError
from alexnet_deploy.preprocess import preprocess_batch

DEFAULT_CHUNK = 32


def _is_single(x) -> bool:
    """True for one image (a path, encoded bytes, a PIL image, an HxWx3 array), False for a list of them."""
    from PIL import Image

    if isinstance(x, (str, Path, Image.Image, bytes, bytearray, memoryview)):
        return True
    if isinstance(x, np.ndarray):
        return x.ndim == 3
    return False


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (stable for large logits)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class Classifier:
    """An exported AlexNet ready to label images.

    ``Classifier(model, providers=None, threads=None, runtime="ort")``: ``model`` is a path or
    the ONNX file's bytes (a worker that does not share the driver's disk gets them from an
    object store); ``runtime`` is a name from ``runtimes.ONNX_RUNTIMES`` ('ort', 'openvino',
    'openvino-bf16', ...); ``threads`` the runtime's CPU threads; ``providers`` onnxruntime's own
    provider list (ort only). ``precision`` is what really runs (e.g. 'bf16' for openvino-bf16).
    """

    def __init__(self, path, providers: list[str] | None = None, threads: int | None = None, runtime: str = "ort"):
        from alexnet_deploy.record import read_record
        from alexnet_deploy.onnx_file import load_onnx, load_onnx_bytes
        from alexnet_deploy.runtimes import open_runtime

        if isinstance(path, (bytes, bytearray, memoryview)):
            path = bytes(path)
            record = read_record(load_onnx_bytes(path), "<model bytes>")
            self.path = None
        else:
            path = Path(path)
            record = read_record(load_onnx(path, load_weights=False), str(path))
            self.path = path
        self.labels: tuple[str, ...] = tuple(record.labels)
        self.preprocessing = record.preprocessing
        if providers is not None:
            if runtime != "ort":
                raise InputError(f"providers are onnxruntime's; runtime {runtime!r} takes none.", "drop providers, or use runtime='ort'")
            from alexnet_deploy.runtimes.ort import OrtRuntime

            self._runtime = OrtRuntime(path, providers=providers, threads=threads, precision=record.precision)
        else:
            self._runtime = open_runtime(path, runtime, threads)
        info = self._runtime.info()
        self.runtime = info.runtime
        self.precision = info.precision or record.precision
        self.input_size = int(info.input_shape[2])
        self.min_batch, self.max_batch = info.min_batch, info.max_batch

    def __repr__(self) -> str:
        where = "<model bytes>" if self.path is None else str(self.path)
        return f"Classifier({where!r}, {len(self.labels)} classes, {self.precision}, input {self.input_size})"

    def preprocess(self, images) -> np.ndarray:
        """One image or a list (paths, encoded bytes, PIL images, HxWx3 uint8 arrays) -> float32 NCHW, as torchvision would make it."""
        images = [images] if _is_single(images) else list(images)
        if not images:
            return np.zeros((0, 3, self.input_size, self.input_size), np.float32)
        return preprocess_batch(images, self.preprocessing)

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Raw logits (N x classes, float32) for a preprocessed float32 NCHW batch of any size."""
        array = np.asarray(batch)
        if array.ndim != 4:
            raise InputError(f"logits() takes an NCHW batch, got shape {list(array.shape)}.", "use predict() for images, or add the batch axis: x[None]")
        if len(array) == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        return self._runtime.run_all(array, self.max_batch or DEFAULT_CHUNK)

    def predict(self, x, topk: int = 5):
        """Best ``topk`` (label, probability) pairs for one image, or one such list per image for a list.

        An image is a path, the bytes of an encoded file (JPEG, PNG, ...), a PIL image or an
        HxWx3 uint8 RGB array; InputError for one that cannot be decoded or is over the pixel limits.
        """
        if topk < 1:
            raise InputError(f"topk must be at least 1, got {topk}.", "e.g. topk=5")
        single = _is_single(x)
        images = [x] if single else list(x)
        if not images:
            return []
        results = self.top(self.logits(self.preprocess(images)), topk)
        return results[0] if single else results

    def top(self, logits: np.ndarray, topk: int = 5) -> list[list[tuple[str, float]]]:
        """Best ``topk`` (label, probability) pairs per row of ``logits`` (what predict() returns for a list)."""
        probabilities = softmax(logits)
        k = min(topk, len(self.labels))
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
        return [[(self.labels[i], float(row[i])) for i in top] for row, top in zip(probabilities, order)]

    def close(self) -> None:
        """Release the runtime (onnxruntime session or OpenVINO compiled models)."""
        self._runtime.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
