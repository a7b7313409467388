"""The HTTP side of ``alexnet serve``: handler, server, limits on connections and requests, signals.

Every resource a client controls is bounded (see :class:`~alexnet_deploy.serve.limits.Limits`):
open connections, the time to send a whole request (a watchdog shuts the socket, so a client
trickling one byte at a time is dropped too), body sizes (checked on Content-Length before
reading), memory held by requests in progress, and the batch queue. Message framing is strict,
because a proxy in front may frame differently: Transfer-Encoding is refused (with
Content-Length it is a 400: the classic request-smuggling pair) and a body on any other method
than POST is a 400 that closes the connection. Accept failing for lack of file descriptors backs
off rather than spinning. SIGTERM/SIGINT close the listener at once, answer what was already
received (for up to ``DRAIN_S`` seconds), then return.
"""

from __future__ import annotations

import errno
import json
import queue
import re
import select
import selectors
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from alexnet_deploy.errors import InputError
from alexnet_deploy.serve.batcher import Share
from alexnet_deploy.serve.limits import BUSY_MESSAGE, Limits, request_cost
from alexnet_deploy.serve.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from alexnet_deploy.serve.model import ModelService
from alexnet_deploy.serve.protocol import RequestError

MAX_DELAY_MS = 10_000
DRAIN_S = 30
_ACCEPT_BACKOFF_S = (0.05, 1.0)  # first and longest pause when accept() has no file descriptor
_DIGITS = re.compile(r"[0-9]{1,18}")
MAX_HEADER_BYTES = 64 << 10  # request line and header lines together (the stdlib alone allows 100 lines of 64 KiB)
_PROBE = b"HTTP/1.1 100 Continue\r\n\r\n"  # an interim answer every HTTP/1.1 client must skip
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
         b"Connection: close\r\nContent-Length: 53\r\n\r\n{\"error\": \"too many connections; retry in a moment\"}\n")


class _HeadersTooLarge(Exception):
    pass


class _CappedReader:
    """The connection's reader while a request line and its headers are read: ``readline`` stops
    at ``MAX_HEADER_BYTES`` in all (127 idle connections x 100 header lines x 64 KiB was 800 MB)."""

    def __init__(self, raw, limit: int):
        self.raw, self.left = raw, limit
        self.lines: list[bytes] = []  # as received: the framing checks read them (the parser has joined and trimmed them)

    def readline(self, size: int = -1) -> bytes:
        cap = self.left + 1 if size is None or size < 0 else min(size, self.left + 1)
        line = self.raw.readline(cap)
        self.left -= len(line)
        if self.left < 0:
            raise _HeadersTooLarge
        self.lines.append(line)
        return line


_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # a header name (RFC 9110 5.1)
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")  # visible characters, SP and HTAB only (RFC 9110 5.5)


def framing_problem(lines: list[bytes]) -> str | None:
    """What is wrong with the raw header lines of a request (after its request line), or None.

    Python's parser is lenient where a proxy in front may not be: it joins a folded line into the
    header above (hiding a Transfer-Encoding there), strips any whitespace (so ``Content-Length:
    5\x0b`` reads as 5), and takes any bytes as a name. RFC 9112 says to reject each.
    """
    for line in lines[1:]:
        if line in (b"\r\n", b"\n"):
            break
        body = line.rstrip(b"\r\n")
        if body[:1] in (b" ", b"\t"):
            return "a folded header line (obs-fold) is not accepted; send each header on one line"
        name, colon, value = body.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            return f"header name {name[:40]!r} is not a token (no spaces, control characters or separators before the colon)"
        if not _FIELD_VALUE.fullmatch(value):
            return f"header {name.decode('latin-1')[:40]} has a control character in its value (only SP and HTAB are whitespace)"
    return None

    def __getattr__(self, name):
        return getattr(self.raw, name)


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


class _Budget:
    """Bytes of memory requests in progress may hold together (a try-reserve counter)."""

    def __init__(self, total: int):
        self.total, self.used = total, 0
        self.lock = threading.Lock()

    def take(self, amount: int) -> bool:
        with self.lock:
            if self.used + amount > self.total:
                return False
            self.used += amount
            return True

    def give(self, amount: int) -> None:
        with self.lock:
            self.used -= amount


class _Deadlines:
    """Shuts the sockets of connections whose current request is not in by its deadline.

    The socket timeout alone applies to each recv, so a client sending a byte every 10 s would
    hold its connection (and thread) forever; this bounds the whole request.
    """

    def __init__(self):
        self.deadlines: dict[socket.socket, float] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="alexnet-deadlines", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """End the watchdog thread."""
        self.stopping.set()
        self._thread.join(timeout=5)

    def set(self, connection: socket.socket, seconds: float | None) -> None:
        with self.lock:
            if seconds is None:
                self.deadlines.pop(connection, None)
            else:
                self.deadlines[connection] = time.monotonic() + seconds

    def _loop(self) -> None:
        while not self.stopping.wait(0.25):
            now = time.monotonic()
            with self.lock:
                late = [conn for conn, deadline in self.deadlines.items() if deadline <= now]
                for conn in late:
                    del self.deadlines[conn]
            for conn in late:
                try:
                    conn.shutdown(socket.SHUT_RDWR)  # the blocked read returns; the handler closes
                except OSError:
                    pass


def endpoint_of(path: str) -> str:
    """The ``endpoint`` label of a request path in the metrics: infer, health, metadata, stats, metrics or other."""
    path = path.split("?", 1)[0].rstrip("/")
    if path.endswith("/infer"):
        return "infer"
    if path.startswith("/v2/health") or path.endswith("/ready"):
        return "health"
    if path.endswith("/stats"):
        return "stats"
    if path == "/metrics":
        return "metrics"
    return "metadata" if path.startswith("/v2") else "other"


class _Overflow:
    """Connections beyond ``--max-connections``: one thread reads each one's request head for at
    most ``DEADLINE_S`` and answers health probes and ``/metrics`` (so Kubernetes does not restart
    a pod whose slots are all held, by load or by clients that never finish their headers); every
    other request gets 503 with Retry-After. At most ``CAPACITY`` wait at once: past that the
    longest-waiting one is answered 503 to make room, so a flood cannot crowd out a probe.
    """

    CAPACITY = 64
    DEADLINE_S = 2.0
    MAX_HEAD = 8 << 10

    def __init__(self, answer):
        self.answer = answer  # request head (bytes, possibly incomplete) -> response bytes
        self.incoming: queue.SimpleQueue = queue.SimpleQueue()
        self.waiting: dict[socket.socket, tuple[float, bytearray]] = {}  # insertion order = arrival order
        self.selector = selectors.DefaultSelector()
        self.wake_read, self.wake_write = socket.socketpair()
        self.wake_read.setblocking(False)
        self.selector.register(self.wake_read, selectors.EVENT_READ)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="alexnet-overflow", daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Stop the thread and close its sockets (the waiting connections get their 503 first)."""
        self.stopping.set()
        self._wake()
        self.thread.join(timeout=5)

    def add(self, connection: socket.socket) -> None:
        """Take over ``connection`` (from the accept loop; never blocks it)."""
        self.incoming.put(connection)
        self._wake()

    def _wake(self) -> None:
        try:
            self.wake_write.send(b"\0")
        except OSError:  # the wake-up pipe is full (the loop is awake anyway) or closed
            pass

    def _finish(self, connection: socket.socket) -> None:
        _, head = self.waiting.pop(connection)
        try:
            self.selector.unregister(connection)
        except (KeyError, ValueError):
            pass
        if not _head_complete(head):  # evicted or timed out: read what arrived meanwhile (a probe's request may be in)
            try:
                head += connection.recv(self.MAX_HEAD)
            except OSError:
                pass
        try:
            connection.send(self.answer(bytes(head)))  # small: fits the socket buffer of a non-blocking send
            connection.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        connection.close()

    def _loop(self) -> None:
        try:
            while not self.stopping.is_set():
                self._turn()
        finally:
            for connection in list(self.waiting):
                self._finish(connection)
            while True:  # added after the last turn: closed unanswered
                try:
                    self.incoming.get_nowait().close()
                except queue.Empty:
                    break
            self.selector.close()
            self.wake_read.close()
            self.wake_write.close()

    def _turn(self) -> None:
        """Read what arrived, take in new connections, answer those whose head is in or whose time is up."""
        for key, _ in self.selector.select(timeout=0.25):
            connection = key.fileobj
            if connection is self.wake_read:
                try:
                    while self.wake_read.recv(4096):
                        pass
                except OSError:
                    pass
                continue
            try:
                data = connection.recv(self.MAX_HEAD)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            head = self.waiting[connection][1]
            head += data
            if not data or _head_complete(head) or len(head) >= self.MAX_HEAD:
                self._finish(connection)
        while True:
            try:
                connection = self.incoming.get_nowait()
            except queue.Empty:
                break
            if len(self.waiting) >= self.CAPACITY:
                self._finish(next(iter(self.waiting)))  # the longest waiting makes room
            connection.setblocking(False)
            self.waiting[connection] = (time.monotonic() + self.DEADLINE_S, bytearray())
            self.selector.register(connection, selectors.EVENT_READ)
        now = time.monotonic()
        for connection in [c for c, (deadline, _) in self.waiting.items() if deadline <= now]:
            self._finish(connection)


def _head_complete(head: bytes) -> bool:
    """Whether a request head has ended (a blank line; bare LF line ends accepted, as the main path accepts them)."""
    return b"\r\n\r\n" in head or b"\n\n" in head


def _plain_response(status: str, body: bytes = b"", content_type: str = "application/json") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def make_server(service: ModelService, host: str, port: int, limits: Limits | None = None) -> ThreadingHTTPServer:
    """An HTTP server answering the v2 protocol for ``service`` (call ``serve_forever``).

    ``server.in_flight`` counts requests being handled; ``server.draining`` is set at shutdown.
    """
    limits = limits or service.limits
    in_flight = _InFlight()
    deadlines = _Deadlines()
    budget = _Budget(limits.max_pending)
    draining = threading.Event()
    metrics = service.metrics
    health_paths = {"/v2/health/live", "/v2/health/ready", f"/v2/models/{service.name}/ready", f"/v2/models/{service.name}/versions/1/ready"}

    def metrics_text() -> bytes:
        batcher = service.batcher
        return metrics.render({
            "alexnet_inference_count_total": ("Images run through the model.", batcher.inference_count),
            "alexnet_execution_count_total": ("Model calls (batches) run.", batcher.execution_count),
            "alexnet_dropped_requests_total": ("Queued requests dropped before they ran because their client gave up.", batcher.dropped_count),
        })

    def overflow_answer(head: bytes) -> bytes:
        """What a connection beyond the limit gets: health probes and /metrics are answered, the rest 503."""
        parts = head.split(b"\n", 1)[0].split()
        path = parts[1].decode("latin-1").split("?", 1)[0].rstrip("/") if len(parts) == 3 else ""
        if parts[:1] == [b"GET"] and parts[2:3] in ([b"HTTP/1.1"], [b"HTTP/1.0"]) and _head_complete(head):
            if path in health_paths:
                metrics.count_request("health", 200)
                return _plain_response("200 OK")
            if path == "/metrics":
                metrics.count_request("metrics", 200)
                return _plain_response("200 OK", metrics_text(), METRICS_CONTENT_TYPE)
        metrics.count_request(endpoint_of(path), 503)
        return _BUSY

    overflow = _Overflow(overflow_answer)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "alexnet-deploy"
        timeout = limits.request_timeout_s  # per recv/send; the watchdog bounds the whole request
        disable_nagle_algorithm = True  # headers and body go out as separate writes: Nagle + delayed ACK would add ~40 ms

        def log_message(self, format, *args):  # quiet: one line per request is noise at load
            pass

        def handle_one_request(self):
            # The deadline covers the idle wait on a kept-alive connection, the headers and the body.
            deadlines.set(self.connection, limits.request_timeout_s)
            raw, self.rfile = self.rfile, _CappedReader(self.rfile, MAX_HEADER_BYTES)
            self.expect_continue = self.probed = False
            try:
                super().handle_one_request()
            except _HeadersTooLarge:
                for name in ("requestline", "request_version", "command"):
                    if not hasattr(self, name):
                        setattr(self, name, "")
                self._refuse(431, f"the request line and headers exceed {MAX_HEADER_BYTES} bytes")
            finally:
                self.rfile = raw
                deadlines.set(self.connection, None)
            if draining.is_set():
                self.close_connection = True  # answered; no further requests once stopping

        def handle_expect_100(self) -> bool:
            # Sent only once the request passed its checks (_post), not before: a client told to
            # continue uploads a body that a 413/404/503 would then throw away.
            self.expect_continue = True
            return True

        def parse_request(self) -> bool:
            if not super().parse_request():
                return False
            if isinstance(self.rfile, _CappedReader):
                problem = framing_problem(self.rfile.lines)
                self.rfile = self.rfile.raw  # the headers are in; the body is bounded by Content-Length
                if problem is not None:
                    return self._refuse(400, problem)
            lengths = self.headers.get_all("Content-Length") or []
            if self.headers.get_all("Transfer-Encoding"):
                if lengths:
                    return self._refuse(400, "Transfer-Encoding together with Content-Length is ambiguous framing; send one")
                return self._refuse(411, "Content-Length is required (chunked bodies are not accepted)")
            if len(lengths) > 1:
                return self._refuse(400, "more than one Content-Length header")
            if len(self.headers.get_all("Inference-Header-Content-Length") or []) > 1:
                return self._refuse(400, "more than one Inference-Header-Content-Length header")
            if lengths and not _DIGITS.fullmatch(lengths[0].strip()):
                # int() would take "+5" or "1_0"; a proxy in front would not: refuse, never guess
                return self._refuse(400, "Content-Length must be a decimal number")
            if self.command != "POST" and lengths and lengths[0].strip() != "0":
                # The body would be read as the next request: refuse it and drop the connection.
                return self._refuse(400, f"a {self.command[:10]} request must not have a body")
            return True

        def _refuse(self, status: int, message: str) -> bool:
            self.close_connection = True
            self._json(status, {"error": message}, {"Connection": "close"})
            return False

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            metrics.count_request(endpoint_of(getattr(self, "path", "") or ""), status)
            self.send_response(status)
            for key, value in (headers if headers is not None else {"Content-Type": "application/json"}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, data, headers: dict[str, str] | None = None) -> None:
            self._send(status, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})})

        def _model_path(self) -> str | None:
            """What follows /v2/models/NAME[/versions/1] ('/' for the model itself), or None for another path."""
            prefix = f"/v2/models/{service.name}"
            path = self.path.split("?", 1)[0].rstrip("/")
            for version in ("/versions/1", ""):
                head = prefix + version
                if path == head or path.startswith(head + "/"):
                    return path[len(head):] or "/"
            return None

        def _gone(self) -> bool:
            """Whether the client has hung up (checked while its request waits for the model).

            End of input alone does not say so: a client may half-close after its request
            (``shutdown(SHUT_WR)``, ``nc -N``) and still read the answer. So the first time it is
            seen, an interim ``100 Continue`` goes out (HTTP/1.1 clients skip it): a socket that is
            closed answers it with a reset, which the next check sees as POLLHUP/POLLERR.
            """
            try:
                poller = select.poll()  # not select.select: descriptors above 1023 are normal here
                poller.register(self.connection, select.POLLIN)
                events = poller.poll(0)
                if not events:
                    return False
                if events[0][1] & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                    return True
                if self.connection.recv(1, socket.MSG_PEEK) != b"":
                    return False  # a pipelined next request
                if not self.probed and self.request_version >= "HTTP/1.1":
                    self.probed = True
                    self.connection.send(_PROBE)
                return False  # half-closed, or not yet known (HTTP/1.0 has no interim answer: it is answered)
            except (OSError, ValueError):
                return True

        def do_GET(self):
            path = self.path.split("?", 1)[0].rstrip("/")
            if path in ("/v2/health/live", "/v2/health/ready"):
                return self._send(200, b"", {})
            if path == "/metrics":
                return self._send(200, metrics_text(), {"Content-Type": METRICS_CONTENT_TYPE})
            if path == "/v2":
                from alexnet_deploy import __version__

                return self._json(200, {"name": "alexnet-deploy", "version": __version__, "extensions": ["binary_tensor_data", "classification", "statistics"]})
            rest = self._model_path()
            if rest == "/":
                return self._json(200, service.metadata())
            if rest == "/ready":
                return self._send(200, b"", {})
            if rest == "/config":
                return self._json(200, service.config())
            if rest == "/stats" or path == "/v2/models/stats":
                batcher = service.batcher
                stats = {"name": service.name, "version": "1", "inference_count": batcher.inference_count, "execution_count": batcher.execution_count,
                         "dropped_count": batcher.dropped_count}
                return self._json(200, {"model_stats": [stats]})
            if rest == "/infer":
                return self._json(405, {"error": "infer takes POST"})
            if path.startswith("/v2/models/"):
                return self._json(404, {"error": f"unknown model; this server serves {service.name!r}"})
            return self._json(404, {"error": f"no such endpoint {path[:200]}"})

        def do_POST(self):
            with in_flight:
                self._post()

        def _post(self):
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                return self._refuse(411, "Content-Length is required (chunked bodies are not accepted)")
            if length < 0:
                return self._refuse(400, "Content-Length is negative")
            header = self.headers.get("Inference-Header-Content-Length")
            if header is not None and not _DIGITS.fullmatch(header.strip()):
                return self._refuse(400, "Inference-Header-Content-Length must be a decimal number")
            header_length = int(header) if header is not None else None
            # Refused before the body is read (so the connection closes: the body is left unread).
            if self._model_path() != "/infer":
                return self._refuse(404, f"no such endpoint {self.path[:200]}; infer at /v2/models/{service.name}/infer")
            if self.headers.get("Content-Encoding", "identity") != "identity":
                return self._refuse(415, f"Content-Encoding {self.headers['Content-Encoding'][:40]} is not supported; send the body uncompressed")
            # Sizes are checked on the headers, before a byte of the body is read.
            json_length = length if header_length is None else header_length
            if length > limits.max_body or json_length > limits.max_json:
                which = f"a JSON part of {json_length} bytes exceeds {limits.max_json} (--max-json-mb; send tensors binary)" if json_length > limits.max_json \
                    else f"request body of {length} bytes exceeds {limits.max_body} (--max-body-mb; send smaller batches)"
                return self._refuse(413, which)
            # the JSON part decodes to Python objects, the binary part to one float32 tensor
            cost = request_cost(min(json_length, length), binary=False) + request_cost(max(0, length - json_length), binary=True)
            if not budget.take(cost):
                return self._busy()
            share = Share(budget, cost)
            try:
                self._infer(length, header_length, share)
            finally:
                if not share.queued:  # else the batcher gives it back when its worker is done with the tensor
                    share.give()

        def _busy(self):
            self.close_connection = True  # its body is not read
            self._json(503, {"error": BUSY_MESSAGE}, {"Retry-After": "1", "Connection": "close"})

        def _infer(self, length: int, header_length: int | None, share: Share):
            if self.expect_continue:
                self.expect_continue = False
                self.send_response_only(100)
                self.end_headers()
            body = self.rfile.read(length)
            if len(body) != length:
                self.close_connection = True
                return self._json(400, {"error": f"the body ended after {len(body)} of {length} bytes"})
            deadlines.set(self.connection, None)  # the request is in; the model's time is bounded by infer_timeout_s
            try:
                payload, headers = service.infer(body, header_length, self._gone, share)
            except RequestError as exc:
                return self._json(exc.status, {"error": str(exc)}, exc.headers)
            except ConnectionAbortedError:
                self.close_connection = True  # nobody to answer
                return
            except Exception as exc:  # a bug: answer it, keep serving
                return self._json(500, {"error": f"internal error: {type(exc).__name__}"})
            self._send(200, payload, headers)

    class Server(ThreadingHTTPServer):
        daemon_threads = True  # idle keep-alive connections must not hold up shutdown; in_flight covers real work
        allow_reuse_address = True
        request_queue_size = 128  # the default listen backlog of 5 resets clients that connect together

        def __init__(self, *args):
            super().__init__(*args)
            self.active = 0
            self.active_lock = threading.Lock()
            self.backoff = 0.0

        def get_request(self):
            try:
                request = self.socket.accept()
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors: the listener stays readable, so retrying at once spins a
                    # core and starves the threads that would free them. Pause, growing to 1 s.
                    self.backoff = min(max(self.backoff * 2, _ACCEPT_BACKOFF_S[0]), _ACCEPT_BACKOFF_S[1])
                    time.sleep(self.backoff)
                raise
            self.backoff = 0.0
            return request

        def process_request(self, request, client_address):
            with self.active_lock:
                full = self.active >= limits.max_connections
                if not full:
                    self.active += 1
            if full:
                overflow.add(request)  # health probes are still answered there; the rest get 503
                return
            try:
                super().process_request(request, client_address)
            except Exception:  # e.g. no thread could be started: drop this one connection
                with self.active_lock:
                    self.active -= 1
                self.shutdown_request(request)

        def process_request_thread(self, request, client_address):
            try:
                super().process_request_thread(request, client_address)
            finally:
                with self.active_lock:
                    self.active -= 1

        def server_close(self):
            super().server_close()
            overflow.close()
            deadlines.close()

        def handle_error(self, request, client_address):
            error = sys.exc_info()[1]
            if isinstance(error, (ConnectionError, TimeoutError)):
                return  # the client went away or stalled: nothing to report
            print(f"alexnet serve: error handling a request from {client_address[0]}: {type(error).__name__}: {error}", file=sys.stderr)

    server = Server((host, port), Handler)
    server.in_flight = in_flight
    server.draining = draining
    return server


def _raise_open_files(wanted: int) -> None:
    """Lift the soft open-file limit toward ``wanted`` (within the hard limit), so --max-connections fits."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        if soft != resource.RLIM_INFINITY and soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ImportError, ValueError, OSError):
        pass  # not fatal: accept backs off if descriptors run out


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas: with a thread per connection it makes up to 8 per core, each
    keeping the pages its threads freed, so RSS grows with the thread count, not the work."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # -8 is M_ARENA_MAX
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune


def serve(model: Path, name: str = "alexnet", host: str = "127.0.0.1", port: int = 8000, max_batch: int = 32, max_delay_ms: float = 5.0,
          threads: int | None = None, ready=None, limits: Limits | None = None, runtime: str = "ort") -> None:
    """Serve ``model`` until SIGTERM/SIGINT; ``ready(url)`` is called once it accepts requests."""
    limits = limits or Limits()
    if max_batch < 1 or not 0 <= max_delay_ms <= MAX_DELAY_MS:
        raise InputError(f"--max-batch must be >= 1 and --max-delay-ms within 0..{MAX_DELAY_MS}.", "e.g. --max-batch 32 --max-delay-ms 5")
    if not 0 <= port <= 65535:
        raise InputError(f"--port {port} is not a TCP port.", "use 1..65535, or 0 for any free port")
    problems = limits.problems()
    if problems:
        raise InputError(f"{problems[0]}.", "see `alexnet serve --help` for the defaults")
    from alexnet_deploy.onnx_file import check_model_name

    check_model_name(name)
    _raise_open_files(limits.max_connections + 256)  # connections plus the model's and Python's own files
    _limit_malloc_arenas()
    service = ModelService(Path(model), name, max_batch, max_delay_ms, threads, limits, runtime)
    try:
        server = make_server(service, host, port, limits)
    except OSError as exc:
        service.close()
        raise InputError(f"cannot listen on {host}:{port} ({exc.strerror or exc}).", "choose another --port, or stop what uses it") from None
    stopping = threading.Event()

    def stop(signum, frame):
        if not stopping.is_set():
            stopping.set()
            server.draining.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if ready is not None:
            ready(f"http://{host}:{server.server_address[1]}")
        server.serve_forever(poll_interval=0.2)
        # Close the listener before draining: new clients get a refusal at once instead of
        # waiting in the backlog for a server that will never accept them.
        server.socket.close()
        server.in_flight.wait_idle(DRAIN_S)  # answer what was already received
    finally:
        server.server_close()
        service.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
