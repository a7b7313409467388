"""``alexnet serve``: the KServe v2 / Triton HTTP inference protocol over onnxruntime (stdlib HTTP server).

Endpoints: ``GET /v2/health/live``, ``/v2/health/ready``, ``/v2`` (server metadata),
``/v2/models/NAME`` (model metadata), ``/v2/models/NAME/ready``, ``/v2/models/NAME/stats``,
``POST /v2/models/NAME/infer`` with JSON tensors or the binary tensor extension
(``Inference-Header-Content-Length``), as Triton's own clients send them.

Concurrent requests are batched on the server: a worker thread takes whatever is queued (up
to ``max_batch`` images, waiting at most ``max_delay_ms`` for more), runs one onnxruntime
call and hands each request its rows. Bad requests get a 4xx with ``{"error": ...}`` and the
server keeps serving; SIGTERM/SIGINT stop it cleanly (in-flight requests are answered).
"""

from __future__ import annotations

import json
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from alexnet_deploy.errors import InputError

MAX_BODY = 64 << 20  # bytes; a 64-image FP32 224x224 batch is 38 MB
_DTYPES = {"FP32": np.float32, "FP16": np.float16, "FP64": np.float64}


class RequestError(Exception):
    """A request the client must fix (answered with ``status``)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class _Job:
    batch: np.ndarray
    done: threading.Event = field(default_factory=threading.Event)
    result: np.ndarray | None = None
    error: str | None = None


class Batcher:
    """Runs queued inputs together: up to ``max_batch`` rows per call, waiting at most ``max_delay_s`` to fill."""

    def __init__(self, runtime, max_batch: int, max_delay_s: float):
        self.runtime = runtime
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.jobs: queue.Queue = queue.Queue()
        self.inference_count = 0
        self.execution_count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="alexnet-batcher", daemon=True)
        self._thread.start()

    def submit(self, batch: np.ndarray, timeout: float = 120.0) -> np.ndarray:
        job = _Job(batch)
        self.jobs.put(job)
        if not job.done.wait(timeout):
            raise RequestError("the model did not answer in time", 503)
        if job.error:
            raise RequestError(job.error, 500)
        return job.result

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                first = self.jobs.get(timeout=0.1)
            except queue.Empty:
                continue
            group, rows = [first], len(first.batch)
            deadline = time.monotonic() + self.max_delay_s
            while rows < self.max_batch:
                try:
                    job = self.jobs.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if rows + len(job.batch) > self.max_batch:
                    self.jobs.put(job)  # next round; order within a round is not promised
                    break
                group.append(job)
                rows += len(job.batch)
            self._run(group)

    def _run(self, group: list[_Job]) -> None:
        try:
            logits = self.runtime.run_all(np.concatenate([job.batch for job in group]), self.max_batch)
            self.execution_count += 1
            self.inference_count += sum(len(job.batch) for job in group)
            start = 0
            for job in group:
                job.result = logits[start:start + len(job.batch)]
                start += len(job.batch)
        except Exception as exc:  # answer every waiting request rather than hang
            for job in group:
                job.error = f"inference failed: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}"
        for job in group:
            job.done.set()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class ModelService:
    """The served model: metadata and request decoding/encoding around a :class:`Batcher`."""

    def __init__(self, path: Path, name: str, max_batch: int, max_delay_ms: float, threads: int | None = None):
        from alexnet_deploy.exporter.metadata import read_record
        from alexnet_deploy.onnx_file import load_onnx
        from alexnet_deploy.runtimes.ort import OrtRuntime

        proto = load_onnx(path, load_weights=False)
        self.record = read_record(proto, str(path))
        self.output_name = proto.graph.output[0].name
        del proto
        self.runtime = OrtRuntime(path, threads=threads, precision=self.record.precision)
        info = self.runtime.info()
        self.name = name
        self.input_name = info.input_name
        self.chw = tuple(int(v) for v in info.input_shape[1:])
        self.fixed = info.max_batch
        limit = info.max_batch or max_batch
        self.batcher = Batcher(self.runtime, max(1, min(max_batch, limit)), max_delay_ms / 1000.0)

    def metadata(self) -> dict:
        return {
            "name": self.name, "versions": ["1"], "platform": "onnxruntime_onnx",
            "inputs": [{"name": self.input_name, "datatype": "FP32", "shape": [-1, *self.chw]}],
            "outputs": [{"name": self.output_name, "datatype": "FP32", "shape": [-1, len(self.record.labels)]}],
        }

    def infer(self, body: bytes, header_length: int | None) -> tuple[bytes, dict[str, str]]:
        """Decode a v2 infer request, run it, encode the response; RequestError for bad requests."""
        if header_length is not None:
            if not 0 < header_length <= len(body):
                raise RequestError(f"Inference-Header-Content-Length {header_length} does not fit a body of {len(body)} bytes")
            header, binary = body[:header_length], body[header_length:]
        else:
            header, binary = body, b""
        try:
            request = json.loads(header)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RequestError(f"the request body is not valid JSON ({exc})") from None
        if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or len(request["inputs"]) != 1:
            raise RequestError(f"the request needs \"inputs\": a list with one tensor named {self.input_name!r}")
        batch = self._decode_input(request["inputs"][0], binary)
        logits = self.batcher.submit(batch)
        return self._encode(request, logits)

    def _decode_input(self, spec, binary: bytes) -> np.ndarray:
        if not isinstance(spec, dict):
            raise RequestError("each input must be an object with name, shape, datatype and data")
        if spec.get("name") != self.input_name:
            raise RequestError(f"unknown input {spec.get('name')!r}; this model's input is {self.input_name!r}")
        datatype = spec.get("datatype")
        if datatype not in _DTYPES:
            raise RequestError(f"datatype {datatype!r} is not supported; send FP32")
        shape = spec.get("shape")
        if not isinstance(shape, list) or not all(isinstance(v, int) and v >= 0 for v in shape) or len(shape) != 4 or tuple(shape[1:]) != self.chw:
            raise RequestError(f"input shape {shape} does not match [N, {', '.join(map(str, self.chw))}]")
        if shape[0] < 1:
            raise RequestError("the batch is empty")
        count = int(np.prod(shape))
        size = (spec.get("parameters") or {}).get("binary_data_size")
        try:
            if size is not None:
                if not isinstance(size, int) or size != len(binary) or size != count * np.dtype(_DTYPES[datatype]).itemsize:
                    raise RequestError(f"binary_data_size {size} does not match shape {shape} of {datatype} (and the {len(binary)} bytes sent)")
                array = np.frombuffer(binary, dtype=_DTYPES[datatype])
            else:
                if "data" not in spec:
                    raise RequestError("the input has no \"data\"")
                array = np.asarray(spec["data"], dtype=_DTYPES[datatype]).reshape(-1)
        except (ValueError, TypeError) as exc:
            raise RequestError(f"input data is not a list of numbers ({exc})") from None
        if array.size != count:
            raise RequestError(f"input has {array.size} values; shape {shape} needs {count}")
        array = array.reshape(shape).astype(np.float32)
        if self.fixed is not None and shape[0] > self.fixed:
            raise RequestError(f"batch {shape[0]} is larger than this model's fixed batch {self.fixed}")
        if not np.isfinite(array).all():
            raise RequestError("input contains NaN or infinity")
        return array

    def _encode(self, request: dict, logits: np.ndarray) -> tuple[bytes, dict[str, str]]:
        wanted = request.get("outputs") or [{"name": self.output_name}]
        binary_default = bool((request.get("parameters") or {}).get("binary_data_output", False))
        outputs, blobs = [], []
        for item in wanted:
            if not isinstance(item, dict) or item.get("name") != self.output_name:
                raise RequestError(f"unknown output {item.get('name') if isinstance(item, dict) else item!r}; this model's output is {self.output_name!r}")
            entry = {"name": self.output_name, "datatype": "FP32", "shape": list(logits.shape)}
            if (item.get("parameters") or {}).get("binary_data", binary_default):
                blob = np.ascontiguousarray(logits, dtype=np.float32).tobytes()
                entry["parameters"] = {"binary_data_size": len(blob)}
                blobs.append(blob)
            else:
                entry["data"] = logits.astype(float).reshape(-1).tolist()
            outputs.append(entry)
        response = {"model_name": self.name, "model_version": "1", "outputs": outputs}
        if "id" in request:
            response["id"] = request["id"]
        text = json.dumps(response).encode()
        if blobs:
            return text + b"".join(blobs), {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(text))}
        return text, {"Content-Type": "application/json"}


def make_server(service: ModelService, host: str, port: int) -> ThreadingHTTPServer:
    """An HTTP server answering the v2 protocol for ``service`` (call ``serve_forever``)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "alexnet-deploy"
        disable_nagle_algorithm = True  # headers and body go out as separate writes: Nagle + delayed ACK would add ~40 ms

        def log_message(self, format, *args):  # quiet: one line per request is noise at load
            pass

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {"Content-Type": "application/json"}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, data) -> None:
            self._send(status, json.dumps(data).encode())

        def _model_path(self) -> str | None:
            prefix = f"/v2/models/{service.name}"
            path = self.path.split("?", 1)[0].rstrip("/")
            for version in ("", "/versions/1"):
                if path.startswith(prefix + version) and (len(path) == len(prefix + version) or path[len(prefix + version)] == "/"):
                    return path[len(prefix + version):] or "/"
            return None

        def do_GET(self):
            path = self.path.split("?", 1)[0].rstrip("/")
            if path in ("/v2/health/live", "/v2/health/ready"):
                return self._send(200, b"", {})
            if path == "/v2":
                from alexnet_deploy import __version__

                return self._json(200, {"name": "alexnet-deploy", "version": __version__, "extensions": ["binary_tensor_data", "statistics"]})
            rest = self._model_path()
            if rest == "/":
                return self._json(200, service.metadata())
            if rest == "/ready":
                return self._send(200, b"", {})
            if rest == "/stats":
                stats = {"name": service.name, "version": "1", "inference_count": service.batcher.inference_count, "execution_count": service.batcher.execution_count}
                return self._json(200, {"model_stats": [stats]})
            if path.startswith("/v2/models/"):
                return self._json(404, {"error": f"unknown model; this server serves {service.name!r}"})
            return self._json(404, {"error": f"no such endpoint {path}"})

        def do_POST(self):
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self.close_connection = True
                return self._json(411, {"error": "Content-Length is required"})
            if length > MAX_BODY:
                self.close_connection = True  # do not read a body this large
                return self._json(413, {"error": f"request body of {length} bytes exceeds {MAX_BODY}; send smaller batches"})
            body = self.rfile.read(length)
            if self._model_path() != "/infer":
                return self._json(404, {"error": f"no such endpoint {self.path}; infer at /v2/models/{service.name}/infer"})
            header = self.headers.get("Inference-Header-Content-Length")
            try:
                payload, headers = service.infer(body, int(header) if header is not None else None)
            except ValueError:
                return self._json(400, {"error": "Inference-Header-Content-Length must be an integer"})
            except RequestError as exc:
                return self._json(exc.status, {"error": str(exc)})
            self._send(200, payload, headers)

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        allow_reuse_address = True
        request_queue_size = 128  # the default listen backlog of 5 resets clients that connect together

    return Server((host, port), Handler)


def serve(model: Path, name: str = "alexnet", host: str = "127.0.0.1", port: int = 8000, max_batch: int = 32, max_delay_ms: float = 5.0,
          threads: int | None = None, ready=None) -> None:
    """Serve ``model`` until SIGTERM/SIGINT; ``ready(url)`` is called once it accepts requests."""
    if max_batch < 1 or max_delay_ms < 0:
        raise InputError("--max-batch must be >= 1 and --max-delay-ms >= 0.", "e.g. --max-batch 32 --max-delay-ms 5")
    service = ModelService(Path(model), name, max_batch, max_delay_ms, threads)
    try:
        server = make_server(service, host, port)
    except OSError as exc:
        raise InputError(f"cannot listen on {host}:{port} ({exc.strerror or exc}).", "choose another --port, or stop what uses it") from None
    stopping = threading.Event()

    def stop(signum, frame):
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if ready is not None:
            ready(f"http://{host}:{server.server_address[1]}")
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        service.batcher.stop()
        service.runtime.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
