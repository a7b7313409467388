"""``alexnet serve``: the KServe v2 / Triton HTTP inference protocol over onnxruntime (stdlib HTTP server).

Endpoints: ``GET /v2/health/live``, ``/v2/health/ready``, ``/v2`` (server metadata),
``/v2/models/NAME`` (model metadata), ``/v2/models/NAME/ready``, ``/v2/models/NAME/stats``,
``POST /v2/models/NAME/infer`` with JSON tensors or the binary tensor extension
(``Inference-Header-Content-Length``), as Triton's own clients send them.

Concurrent requests are batched on the server: a worker thread takes whatever is queued (up
to ``max_batch`` images, waiting at most ``max_delay_ms`` for more), runs one onnxruntime
call and hands each request its rows. Bad requests get a 4xx with ``{"error": ...}`` and the
server keeps serving; SIGTERM/SIGINT stop it cleanly: no new connections, requests already
received are answered (for up to ``DRAIN_S`` seconds), then it exits. Triton's classification
extension (``"classification": k`` in an output's parameters, ``class_count`` in tritonclient)
returns ``"score:index:label"`` strings.
"""

from __future__ import annotations

import json
import math
import queue
import struct
import signal
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from alexnet_deploy.errors import InputError

MAX_BODY = 64 << 20  # bytes; a 64-image FP32 224x224 batch is 38 MB
MAX_DELAY_MS = 10_000
READ_TIMEOUT_S = 30  # a client that stops sending mid-request is dropped after this
DRAIN_S = 30
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
        while True:
            try:
                first = self.jobs.get(timeout=0.1)
            except queue.Empty:
                if self._stop.is_set():
                    return  # stopped and nothing left queued
                continue
            try:
                self._collect_and_run(first)
            except Exception as exc:  # never let the worker die: every later request would hang
                first.error = first.error or f"batching failed: {type(exc).__name__}"
                first.done.set()

    def _collect_and_run(self, first: _Job) -> None:
        """Wait up to max_delay for more jobs (none once stopping), then run them as one batch."""
        group, rows = [first], len(first.batch)
        deadline = time.monotonic() + (0.0 if self._stop.is_set() else self.max_delay_s)
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
        """Run what is still queued, then end the worker."""
        self._stop.set()
        self._thread.join(timeout=DRAIN_S)


class ModelService:
    """The served model: metadata and request decoding/encoding around a :class:`Batcher`."""

    def __init__(self, path: Path, name: str, max_batch: int, max_delay_ms: float, threads: int | None = None):
        from alexnet_deploy.record import read_record
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
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise RequestError(f"the request body is not valid JSON ({str(exc)[:120]})") from None
        if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or len(request["inputs"]) != 1:
            raise RequestError(f"the request needs \"inputs\": a list with one tensor named {self.input_name!r}")
        if request.get("outputs") is not None and not isinstance(request["outputs"], list):
            raise RequestError("\"outputs\" must be a list")
        for where in [request] + request["inputs"] + (request.get("outputs") or []):
            if isinstance(where, dict) and not isinstance(where.get("parameters", {}), dict):
                raise RequestError("\"parameters\" must be an object")
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
        if not isinstance(shape, list) or not all(type(v) is int and v >= 0 for v in shape) or len(shape) != 4 or tuple(shape[1:]) != self.chw:
            raise RequestError(f"input shape {str(shape)[:80]} does not match [N, {', '.join(map(str, self.chw))}]")
        if shape[0] < 1:
            raise RequestError("the batch is empty")
        count = math.prod(shape)
        if count * 4 > MAX_BODY * 2:
            raise RequestError(f"input shape {shape} is larger than this server accepts; send smaller batches", 413)
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
        if not np.isfinite(array).all():
            raise RequestError("input contains NaN or infinity")
        return array

    def _classes(self, logits: np.ndarray, count) -> list[list[str]]:
        """Triton's classification extension: the top ``count`` as "score:index:label" (scores are logits)."""
        if type(count) is not int or count < 1:
            raise RequestError(f"classification (class_count) must be a positive integer, got {count!r}")
        k = min(count, logits.shape[1])
        order = np.argsort(-logits, axis=1, kind="stable")[:, :k]
        return [[f"{row[i]:f}:{i}:{self.record.labels[i]}" for i in top] for row, top in zip(logits, order)]

    def _encode(self, request: dict, logits: np.ndarray) -> tuple[bytes, dict[str, str]]:
        if not np.isfinite(logits).all():
            raise RequestError("the model produced non-finite outputs for this input (values out of range?)", 422)
        wanted = request.get("outputs") or [{"name": self.output_name}]
        binary_default = (request.get("parameters") or {}).get("binary_data_output", False) is True
        outputs, blobs = [], []
        for item in wanted:
            if not isinstance(item, dict) or item.get("name") != self.output_name:
                raise RequestError(f"unknown output {item.get('name') if isinstance(item, dict) else item!r}; this model's output is {self.output_name!r}")
            parameters = item.get("parameters") or {}
            binary = parameters.get("binary_data", binary_default) is True
            if "classification" in parameters:  # what clients send for class_count=k
                classes = self._classes(logits, parameters["classification"])
                entry = {"name": self.output_name, "datatype": "BYTES", "shape": [len(classes), len(classes[0])]}
                if binary:
                    blob = b"".join(struct.pack("<I", len(v.encode())) + v.encode() for row in classes for v in row)
                else:
                    entry["data"] = [v for row in classes for v in row]
            else:
                entry = {"name": self.output_name, "datatype": "FP32", "shape": list(logits.shape)}
                if binary:
                    blob = np.ascontiguousarray(logits, dtype=np.float32).tobytes()
                else:
                    entry["data"] = logits.astype(float).reshape(-1).tolist()
            if binary:
                entry["parameters"] = {"binary_data_size": len(blob)}
                blobs.append(blob)
            outputs.append(entry)
        response = {"model_name": self.name, "model_version": "1", "outputs": outputs}
        if "id" in request:
            response["id"] = request["id"]
        text = json.dumps(response, allow_nan=False).encode()
        if blobs:
            return text + b"".join(blobs), {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(text))}
        return text, {"Content-Type": "application/json"}


class _InFlight:
    """Counts requests being handled, so shutdown can wait for them."""

    def __init__(self):
        self.count = 0
        self.idle = threading.Condition()

    def __enter__(self):
        with self.idle:
            self.count += 1

    def __exit__(self, *exc):
        with self.idle:
            self.count -= 1
            self.idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self.idle:
            return self.idle.wait_for(lambda: self.count == 0, timeout)


def make_server(service: ModelService, host: str, port: int) -> ThreadingHTTPServer:
    """An HTTP server answering the v2 protocol for ``service`` (call ``serve_forever``).

    ``server.in_flight`` counts requests being handled.
    """
    in_flight = _InFlight()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "alexnet-deploy"
        timeout = READ_TIMEOUT_S
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
            """What follows /v2/models/NAME[/versions/1] ('/' for the model itself), or None for another path."""
            prefix = f"/v2/models/{service.name}"
            path = self.path.split("?", 1)[0].rstrip("/")
            for version in ("/versions/1", ""):
                head = prefix + version
                if path == head or path.startswith(head + "/"):
                    return path[len(head):] or "/"
            return None

        def do_GET(self):
            path = self.path.split("?", 1)[0].rstrip("/")
            if path in ("/v2/health/live", "/v2/health/ready"):
                return self._send(200, b"", {})
            if path == "/v2":
                from alexnet_deploy import __version__

                return self._json(200, {"name": "alexnet-deploy", "version": __version__, "extensions": ["binary_tensor_data", "classification", "statistics"]})
            rest = self._model_path()
            if rest == "/":
                return self._json(200, service.metadata())
            if rest == "/ready":
                return self._send(200, b"", {})
            if rest == "/stats" or path == "/v2/models/stats":
                stats = {"name": service.name, "version": "1", "inference_count": service.batcher.inference_count, "execution_count": service.batcher.execution_count}
                return self._json(200, {"model_stats": [stats]})
            if rest == "/infer":
                return self._json(405, {"error": "infer takes POST"})
            if path.startswith("/v2/models/"):
                return self._json(404, {"error": f"unknown model; this server serves {service.name!r}"})
            return self._json(404, {"error": f"no such endpoint {path}"})

        def do_POST(self):
            with in_flight:
                self._post()

        def _post(self):
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self.close_connection = True
                return self._json(411, {"error": "Content-Length is required (chunked bodies are not accepted)"})
            if length < 0:
                self.close_connection = True
                return self._json(400, {"error": "Content-Length is negative"})
            if length > MAX_BODY:
                self.close_connection = True  # do not read a body this large
                return self._json(413, {"error": f"request body of {length} bytes exceeds {MAX_BODY}; send smaller batches"})
            body = self.rfile.read(length)
            if len(body) != length:
                self.close_connection = True
                return self._json(400, {"error": f"the body ended after {len(body)} of {length} bytes"})
            if self._model_path() != "/infer":
                return self._json(404, {"error": f"no such endpoint {self.path}; infer at /v2/models/{service.name}/infer"})
            if self.headers.get("Content-Encoding", "identity") != "identity":
                return self._json(415, {"error": f"Content-Encoding {self.headers['Content-Encoding']} is not supported; send the body uncompressed"})
            header = self.headers.get("Inference-Header-Content-Length")
            try:
                header_length = int(header) if header is not None else None
            except ValueError:
                return self._json(400, {"error": "Inference-Header-Content-Length must be an integer"})
            try:
                payload, headers = service.infer(body, header_length)
            except RequestError as exc:
                return self._json(exc.status, {"error": str(exc)})
            except Exception as exc:  # a bug: answer it, keep serving
                return self._json(500, {"error": f"internal error: {type(exc).__name__}"})
            self._send(200, payload, headers)

    class Server(ThreadingHTTPServer):
        daemon_threads = True  # idle keep-alive connections must not hold up shutdown; in_flight covers real work
        allow_reuse_address = True
        request_queue_size = 128  # the default listen backlog of 5 resets clients that connect together

        def handle_error(self, request, client_address):
            import sys

            error = sys.exc_info()[1]
            if isinstance(error, (ConnectionError, TimeoutError)):
                return  # the client went away or stalled: nothing to report
            print(f"alexnet serve: error handling a request from {client_address[0]}: {type(error).__name__}: {error}", file=sys.stderr)

    server = Server((host, port), Handler)
    server.in_flight = in_flight
    return server


def serve(model: Path, name: str = "alexnet", host: str = "127.0.0.1", port: int = 8000, max_batch: int = 32, max_delay_ms: float = 5.0,
          threads: int | None = None, ready=None) -> None:
    """Serve ``model`` until SIGTERM/SIGINT; ``ready(url)`` is called once it accepts requests."""
    if max_batch < 1 or not 0 <= max_delay_ms <= MAX_DELAY_MS:
        raise InputError(f"--max-batch must be >= 1 and --max-delay-ms within 0..{MAX_DELAY_MS}.", "e.g. --max-batch 32 --max-delay-ms 5")
    if not 0 <= port <= 65535:
        raise InputError(f"--port {port} is not a TCP port.", "use 1..65535, or 0 for any free port")
    from alexnet_deploy.onnx_file import check_model_name

    check_model_name(name)
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
        server.in_flight.wait_idle(DRAIN_S)  # answer what was already received
    finally:
        service.batcher.stop()
        server.server_close()
        service.runtime.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
