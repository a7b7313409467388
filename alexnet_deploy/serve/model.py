"""The served model: its runtime, its protocol codec, its batcher and its metrics."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from alexnet_deploy.imaging import IMAGE_FORMATS, ImageRejected, ImageTooLarge, checked_resize
from alexnet_deploy.preprocess import model_input
from alexnet_deploy.record import read_record
from alexnet_deploy.serve.batcher import Batcher
from alexnet_deploy.serve.limits import BUSY_MESSAGE, Limits
from alexnet_deploy.serve.metrics import ServeMetrics
from alexnet_deploy.serve.protocol import Codec, EncodedImages, RequestError


# Full-size images a decode holds at its peak, measured for 5000x5000 files: WebP's decoder keeps
# extra buffers (2x what two copies would be), a progressive CMYK JPEG 1.5x; the rest at most two.
_DECODE_COPIES = {"WEBP": 4, "JPEG": 3}


def decode_cost(width: int, height: int, spec, fmt: str | None = None) -> int:
    """Bytes that decoding and resizing one ``width`` x ``height`` image of format ``fmt`` holds at its peak.

    Pillow keeps RGB as 4 bytes a pixel: the decoded image (and a converted copy for modes other
    than RGB, more for some decoders) plus the resized one. ImageTooLarge when the resized size is over the limit.
    """
    resized = checked_resize(width, height, spec.resize, spec.resize_mode)
    return 4 * (_DECODE_COPIES.get(fmt, 2) * width * height + resized[0] * resized[1])


def _busy() -> RequestError:
    return RequestError(BUSY_MESSAGE, 503, {"Retry-After": "1"})


class ModelService:
    """Loads ``path`` and answers decoded requests through a :class:`Batcher`."""

    def __init__(self, path: Path, name: str, max_batch: int, max_delay_ms: float, threads: int | None = None, limits: Limits | None = None, runtime: str = "ort"):
        from alexnet_deploy.onnx_file import load_onnx
        from alexnet_deploy.runtimes import open_runtime

        self.limits = limits or Limits()
        proto = load_onnx(path, load_weights=False)
        self.record = read_record(proto, str(path))
        output_name = proto.graph.output[0].name
        del proto
        self.runtime = open_runtime(path, runtime, threads)  # 'ort', 'openvino', 'openvino-bf16', ...
        info = self.runtime.info()
        self.name = name
        self.spec = self.record.preprocessing
        published = {**asdict(self.spec), "torchvision": self.spec.describe()}
        self.codec = Codec(name, info.input_name, tuple(int(v) for v in info.input_shape[1:]), output_name, list(self.record.labels),
                           self.limits.max_body, preprocessing=published)
        self.metrics = ServeMetrics(name)
        limit = info.max_batch or max_batch
        self.batcher = Batcher(self.runtime, max(1, min(max_batch, limit)), max_delay_ms / 1000.0, self.limits.max_queue, self.metrics)
        self.metrics.gauge("alexnet_queue_requests", "Requests waiting for the model now.", self.batcher.jobs.qsize)

    def metadata(self) -> dict:
        return self.codec.metadata()

    def config(self) -> dict:
        """``GET /v2/models/NAME/config``: the model's configuration in Triton's JSON form (ModelConfig fields)."""
        codec = self.codec
        inputs = [{"name": codec.input_name, "data_type": "TYPE_FP32", "dims": list(codec.chw)},
                  {"name": codec.image_input, "data_type": "TYPE_STRING", "dims": [1]}]
        return {
            "name": self.name, "platform": "onnxruntime_onnx", "backend": self.runtime.info().runtime,
            "max_batch_size": self.batcher.max_batch, "input": inputs,
            "output": [{"name": codec.output_name, "data_type": "TYPE_FP32", "dims": [len(codec.labels)]}],
            "dynamic_batching": {"max_queue_delay_microseconds": int(round(self.batcher.max_delay_s * 1e6))},
            "parameters": {"preprocessing": {"string_value": json.dumps(codec.preprocessing, sort_keys=True)}},
        }

    def infer(self, body: bytes, header_length: int | None, gone=None, share=None) -> tuple[bytes, dict[str, str]]:
        """Decode a v2 infer request, run it, encode the response; RequestError for bad requests.

        ``share`` (a batcher.Share) passes to the batcher with the decoded tensor; see Batcher.submit.
        Encoded images are decoded here, one at a time, each first reserving the memory it
        needs from ``share``'s budget (503 while others hold it, 413 when it can never fit).
        """
        started = time.monotonic()
        request, batch = self.codec.decode(body, header_length)
        if isinstance(batch, EncodedImages):
            for item in request["inputs"]:  # the base64 text is decoded: only the body and the images' bytes stay
                item.pop("data", None)
            batch = self.preprocess(batch, share, len(body), gone)
        self.metrics.observe("alexnet_request_preprocess_seconds", time.monotonic() - started)
        logits = self.batcher.submit(batch, self.limits.infer_timeout_s, gone, share)
        return self.codec.encode(request, logits)

    def preprocess(self, images: EncodedImages, share=None, body_bytes: int = 0, gone=None) -> np.ndarray:
        """Encoded images -> the model's float32 NCHW batch, with the record's preprocessing (as Classifier does).

        With a ``share``, the request's memory is re-counted once its JSON is parsed: the body
        and the encoded images (at most the body's size again) plus the batch, which stays
        queued with the request; then each image's decoding memory is taken from the budget
        while it is decoded: 503 while others hold it, 413 when it could never fit. ``gone()`` is
        asked before each image: a client that hung up costs no more decoding.
        """
        budget = None if share is None else share.budget
        tensor_bytes = len(images) * 3 * self.spec.crop * self.spec.crop * 4
        if share is not None and not share.resize(2 * body_bytes + tensor_bytes):
            raise _busy()
        batch = np.empty((len(images), 3, self.spec.crop, self.spec.crop), np.float32)
        for index, (encoded, row) in enumerate(zip(images, batch)):
            if gone is not None and gone():
                raise ConnectionAbortedError("the client disconnected while its images were decoded")
            held = []

            def reserve(width: int, height: int, fmt: str | None = None) -> None:
                if budget is None:
                    return
                cost = decode_cost(width, height, self.spec, fmt)
                if cost + share.amount > budget.total:
                    raise RequestError(f"image {index} ({width}x{height}) needs {cost >> 20} MiB to decode; with its request's "
                                       f"{share.amount >> 20} MiB that is over this server's {budget.total >> 20} MiB for requests in progress "
                                       "(--max-pending-mb); send it smaller", 413)
                if not budget.take(cost):
                    raise _busy()
                held.append(cost)

            try:
                model_input(encoded, self.spec, out=row, before_load=reserve)
            except ImageTooLarge as exc:
                raise RequestError(f"image {index}: {exc}; send it smaller", 413) from None
            except ImageRejected as exc:
                raise RequestError(f"image {index}: {exc} (send {', '.join(IMAGE_FORMATS)})") from None
            finally:
                for cost in held:
                    budget.give(cost)
        self.metrics.count_images(len(images))
        return batch

    def close(self) -> None:
        self.batcher.stop()
        self.runtime.close()
