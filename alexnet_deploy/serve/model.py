"""The served model: an onnxruntime session, its protocol codec and its batcher."""

from __future__ import annotations

from pathlib import Path

from alexnet_deploy.record import read_record
from alexnet_deploy.serve.batcher import Batcher
from alexnet_deploy.serve.limits import Limits
from alexnet_deploy.serve.protocol import Codec


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
        self.codec = Codec(name, info.input_name, tuple(int(v) for v in info.input_shape[1:]), output_name, list(self.record.labels), self.limits.max_body)
        limit = info.max_batch or max_batch
        self.batcher = Batcher(self.runtime, max(1, min(max_batch, limit)), max_delay_ms / 1000.0, self.limits.max_queue)

    def metadata(self) -> dict:
        return self.codec.metadata()

    def infer(self, body: bytes, header_length: int | None, gone=None, share=None) -> tuple[bytes, dict[str, str]]:
        """Decode a v2 infer request, run it, encode the response; RequestError for bad requests.

        ``share`` (a batcher.Share) passes to the batcher with the decoded tensor; see Batcher.submit.
        """
        request, batch = self.codec.decode(body, header_length)
        logits = self.batcher.submit(batch, self.limits.infer_timeout_s, gone, share)
        return self.codec.encode(request, logits)

    def close(self) -> None:
        self.batcher.stop()
        self.runtime.close()
