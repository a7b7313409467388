"""Hostile traffic against ``alexnet serve`` next to valid load (recorded in BENCHMARKS.md).

``python -m alexnet_deploy.bench.serve_faults MODEL.onnx [--clients 64] [--per-client 3] [--phases 3] [--write BENCHMARKS.md]``
starts one ``alexnet serve`` subprocess on 127.0.0.1 (nothing else is ever contacted), then:

1. baseline: ``--clients`` concurrent tritonclient clients, ``--per-client`` batch-1 requests each;
2. hostile, ``--phases`` times: the same valid load again while slow clients trickle one byte a second and other
   threads send oversize and malformed requests in bounded rounds.

Every valid answer is compared with a bare onnxruntime session on the same input; every bad
request must get a 4xx. Reports those counts, the server's RSS before/after (and peak), and the
valid requests' p50/p99 in both phases. Every loop is bounded in count and in time, and the
server is stopped (SIGTERM, then kill) whatever happens.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

HOST = "127.0.0.1"  # loopback only, by design
PHASE_LIMIT_S = 240  # no phase may run longer than this, whatever the machine's speed
SLOW_CLIENTS = 40
BAD_ROUNDS = 12


def _rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of ``pid`` in MB, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def _status_of(request: bytes, port: int, timeout: float = 30.0) -> int | None:
    """Send one raw request; the status code of the first response, or None if none came."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        try:
            sock.sendall(request)
        except OSError:
            pass  # the server may refuse before the body is all sent: its answer is what counts
        data, end = b"", time.monotonic() + timeout
        while b"\r\n" not in data and time.monotonic() < end:
            try:
                chunk = sock.recv(4096)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
    try:
        return int(data.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None


def _post(path: str, body: bytes, headers: dict[str, str] | None = None, length: int | None = None) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {len(body) if length is None else length}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in (headers or {"Content-Type": "application/json"}).items())
    return head.encode() + b"\r\n" + body


def bad_requests(chw: tuple[int, ...]) -> dict[str, bytes]:
    """Name -> raw request; each must be answered 4xx (none may be run)."""
    infer = "/v2/models/alexnet/infer"
    count = int(np.prod(chw))
    good = {"name": "input", "shape": [1, *chw], "datatype": "FP32"}

    def with_data(spec, data: str, **extra) -> bytes:
        # data is spliced in as text so a literal json would not write (a 400-digit integer) survives
        text = json.dumps(spec)[:-1] + f', "data": {data}}}'
        rest = json.dumps(extra)[1:-1]
        return ('{"inputs": [' + text + "]" + (", " + rest if rest else "") + "}").encode()

    zeros = "[" + ",".join(["0"] * count) + "]"
    binary_header = json.dumps({"inputs": [dict(good, shape=[500, *chw], parameters={"binary_data_size": 500 * count * 4})]}).encode()
    smuggled = f"GET /v2/models/alexnet/stats HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
    return {
        "body over --max-body-mb (1 GiB declared)": _post(infer, b"", {"Inference-Header-Content-Length": "10"}, length=1 << 30),
        "JSON over --max-json-mb (60 MiB declared)": _post(infer, b'{"inputs": [', length=60 << 20),
        "declared tensor over --max-body-mb": _post(infer, binary_header, {"Inference-Header-Content-Length": str(len(binary_header))}),
        "200,000 outputs entries": _post(infer, with_data(good, zeros, outputs=[{"name": "logits"}] * 200_000)),
        "not JSON": _post(infer, b"{not json"),
        "nested 100,000 deep": _post(infer, b"[" * 100_000),
        "FP64 input": _post(infer, with_data(dict(good, datatype="FP64"), zeros)),
        "400-digit integer": _post(infer, with_data(good, "[" + "9" * 400 + zeros[2:])),
        "wrong shape": _post(infer, with_data(dict(good, shape=[1, 3, 8, 8]), "[" + ",".join(["0"] * 192) + "]")),
        "binary size mismatch": _post(infer, binary_header.replace(b"500", b"1", 1), {"Inference-Header-Content-Length": str(len(binary_header) - 2)}),
        "Transfer-Encoding with Content-Length": _post(infer, b"0\r\n\r\n" + smuggled, {"Transfer-Encoding": "chunked"}),
        "GET with a body": f"GET /v2/health/live HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {len(smuggled)}\r\n\r\n".encode() + smuggled,
    }


def _slow_client(port: int, stop: threading.Event, dropped: list) -> None:
    """Trickle a request one byte a second until the server drops us or ``stop`` (bounded by PHASE_LIMIT_S)."""
    head = f"POST /v2/models/alexnet/infer HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 1000\r\n\r\n".encode() + b" " * 1000
    end = time.monotonic() + PHASE_LIMIT_S
    try:
        with socket.create_connection((HOST, port), timeout=5) as sock:
            for i in range(len(head)):
                if stop.is_set() or time.monotonic() > end:
                    return
                sock.sendall(head[i:i + 1])
                sock.settimeout(1.0)
                try:
                    if sock.recv(4096) == b"":
                        dropped.append(1)
                        return
                except TimeoutError:
                    pass
    except OSError:
        dropped.append(1)  # reset or refused: the server let go of us


def _valid_load(port: int, inputs: list[np.ndarray], expected: list[np.ndarray], per_client: int) -> tuple[int, int, list[float], list[str]]:
    """(correct answers, requests, latencies ms, failure notes) for one client per input."""
    import tritonclient.http as http

    latencies: list[float] = []
    correct, failures = [0], []
    lock = threading.Lock()
    barrier = threading.Barrier(len(inputs))

    def client(index):
        connection = http.InferenceServerClient(f"{HOST}:{port}", connection_timeout=120, network_timeout=120)
        item = http.InferInput("input", list(inputs[index].shape), "FP32")
        item.set_data_from_numpy(inputs[index])
        try:
            barrier.wait(timeout=60)
        except threading.BrokenBarrierError:
            pass
        for _ in range(per_client):
            start = time.perf_counter()
            try:
                answer = connection.infer("alexnet", [item]).as_numpy("logits")
                ok = np.allclose(answer, expected[index], rtol=1e-3, atol=1e-3)
                note = None if ok else f"client {index}: wrong logits"
            except Exception as exc:  # counted as a failure, not raised: the report must come out
                ok, note = False, f"client {index}: {type(exc).__name__}: {str(exc)[:120]}"
            with lock:
                latencies.append((time.perf_counter() - start) * 1000)
                correct[0] += ok
                if note:
                    failures.append(note)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(len(inputs))]
    for thread in threads:
        thread.start()
    end = time.monotonic() + PHASE_LIMIT_S
    for thread in threads:
        thread.join(timeout=max(0.1, end - time.monotonic()))
    return correct[0], len(inputs) * per_client, latencies, failures


def measure(model: Path, clients: int = 64, per_client: int = 3, phases: int = 3, server_args: tuple[str, ...] = ("--request-timeout-s", "10")) -> dict:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])  # the independent reference
    spec = session.get_inputs()[0]
    chw = tuple(int(v) for v in spec.shape[1:])
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((1, *chw), dtype=np.float32) for _ in range(clients)]
    expected = [session.run(None, {spec.name: x})[0] for x in inputs]
    del session
    process = subprocess.Popen([sys.executable, "-m", "alexnet_deploy", "serve", str(model), "--host", HOST, "--port", "0", *server_args],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=dict(os.environ, COLUMNS="300"))
    try:
        line = process.stdout.readline()
        if " at " not in line:
            raise SystemExit(f"alexnet serve did not start: {line!r}")
        port = urlparse(line.split(" at ", 1)[1].strip()).port
        # Warm-up at full concurrency: onnxruntime sizes its arena for the largest batch it runs,
        # and that model memory is not what this measures.
        _valid_load(port, inputs, expected, 1)
        rss_before, _ = _rss_mb(process.pid)
        base_ok, base_n, base_lat, base_fail = _valid_load(port, inputs, expected, per_client)
        rss_mid, _ = _rss_mb(process.pid)

        requests = bad_requests(chw)
        bad_answers: dict[str, list] = {name: [] for name in requests}
        dropped: list = []
        hostile_ok = hostile_n = 0
        hostile_lat: list[float] = []
        hostile_fail: list[str] = []
        rss_phases = []
        for _ in range(phases):  # repeated, so growth that continues (a leak) shows apart from a plateau
            stop = threading.Event()
            slow = [threading.Thread(target=_slow_client, args=(port, stop, dropped), daemon=True) for _ in range(SLOW_CLIENTS)]
            for thread in slow:
                thread.start()

            def hostile(names):
                end = time.monotonic() + PHASE_LIMIT_S
                for _ in range(BAD_ROUNDS):
                    for name in names:
                        if time.monotonic() > end:
                            return
                        try:
                            bad_answers[name].append(_status_of(requests[name], port))
                        except OSError as exc:
                            bad_answers[name].append(f"{type(exc).__name__}")

            names = list(requests)
            senders = [threading.Thread(target=hostile, args=(names[i::3],), daemon=True) for i in range(3)]
            for thread in senders:
                thread.start()
            time.sleep(1.0)  # let the slow clients and the first bad requests land first
            ok, n, lat, fail = _valid_load(port, inputs, expected, per_client)
            hostile_ok, hostile_n, hostile_lat, hostile_fail = hostile_ok + ok, hostile_n + n, hostile_lat + lat, hostile_fail + fail
            end = time.monotonic() + PHASE_LIMIT_S
            for thread in senders:
                thread.join(timeout=max(0.1, end - time.monotonic()))
            time.sleep(12)  # past the 10 s request deadline: every slow client should have been dropped
            stop.set()
            for thread in slow:
                thread.join(timeout=5)
            rss_phases.append(_rss_mb(process.pid)[0])
        rss_after, rss_peak = _rss_mb(process.pid)
        alive = process.poll() is None
        flat = [v for values in bad_answers.values() for v in values]
        return {
            "model": model.name, "clients": clients, "per_client": per_client, "server_args": list(server_args),
            "baseline": {"correct": base_ok, "requests": base_n, "p50_ms": float(np.percentile(base_lat, 50)), "p99_ms": float(np.percentile(base_lat, 99)), "failures": base_fail[:5]},
            "hostile": {"correct": hostile_ok, "requests": hostile_n, "p50_ms": float(np.percentile(hostile_lat, 50)), "p99_ms": float(np.percentile(hostile_lat, 99)), "failures": hostile_fail[:5]},
            "bad": {"sent": len(flat), "answered_4xx": sum(isinstance(v, int) and 400 <= v < 500 for v in flat),
                    "by_kind": {name: sorted({str(v) for v in values}) for name, values in bad_answers.items()}},
            "slow": {"clients": SLOW_CLIENTS * phases, "dropped": len(dropped)}, "phases": phases,
            "rss_mb": {"before": rss_before, "after_valid": rss_mid, "after_each_hostile": rss_phases, "after": rss_after, "peak": rss_peak, "growth": rss_after - rss_before},
            "server_alive": alive,
        }
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def markdown(result: dict) -> str:
    from alexnet_deploy.bench.host import cpu_name

    b, h, bad, rss = result["baseline"], result["hostile"], result["bad"], result["rss_mb"]
    lines = [
        "## Serving under hostile traffic (`python -m alexnet_deploy.bench.serve_faults`)",
        "",
        f"{time.strftime('%Y-%m-%d')}, {cpu_name()}, {os.cpu_count()} cores (shared with other work). Model {result['model']}; "
        f"`alexnet serve` defaults except {' '.join(result['server_args']) or 'none'}, on 127.0.0.1; {result['clients']} concurrent tritonclient "
        f"clients x {result['per_client']} batch-1 binary requests, each answer checked against a bare onnxruntime session. "
        f"Hostile phase: the same load while {SLOW_CLIENTS} clients trickle a request one byte a second and 3 threads send "
        f"{len(bad['by_kind'])} kinds of oversize or malformed request, {BAD_ROUNDS} rounds; run {result['phases']} times.",
        "",
        "| phase | valid answered correctly | p50 ms | p99 ms |",
        "|---|---:|---:|---:|",
        f"| valid load only | {b['correct']}/{b['requests']} | {b['p50_ms']:.0f} | {b['p99_ms']:.0f} |",
        f"| with hostile traffic ({result['phases']} phases) | {h['correct']}/{h['requests']} | {h['p50_ms']:.0f} | {h['p99_ms']:.0f} |",
        "",
        f"- Bad requests answered 4xx: {bad['answered_4xx']}/{bad['sent']}. Status codes by kind: "
        + "; ".join(f"{name}: {', '.join(codes)}" for name, codes in bad["by_kind"].items()) + ".",
        f"- Slow clients dropped by the server's request deadline: {result['slow']['dropped']}/{result['slow']['clients']}.",
        f"- Server RSS (after a warm-up round at full concurrency): {rss['before']:.0f} MB before the measured phases, "
        f"{rss['after_valid']:.0f} MB after the valid-only phase, {' then '.join(f'{v:.0f}' for v in rss['after_each_hostile'])} MB after each hostile phase "
        f"(growth {rss['growth']:+.0f} MB; peak {rss['peak']:.0f} MB). Server alive at the end: {'yes' if result['server_alive'] else 'NO'}.",
    ]
    failures = b["failures"] + h["failures"]
    if failures:
        lines.append(f"- Failures (first few): {'; '.join(failures)}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--per-client", type=int, default=3)
    parser.add_argument("--phases", type=int, default=3, help="hostile phases, one after another (1..5)")
    parser.add_argument("--json", action="store_true", help="print the raw result as JSON too")
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 100 or not 1 <= args.per_client <= 20 or not 1 <= args.phases <= 5:
        parser.error("--clients must be within 1..100, --per-client within 1..20 and --phases within 1..5")
    result = measure(args.model, args.clients, args.per_client, args.phases)
    if args.json:
        print(json.dumps(result, indent=2))
    section = markdown(result)
    print(section)
    if args.write:
        from alexnet_deploy.bench.report import write_section

        write_section(args.write, section)
    ok = (result["baseline"]["correct"] == result["baseline"]["requests"] and result["hostile"]["correct"] == result["hostile"]["requests"]
          and result["bad"]["answered_4xx"] == result["bad"]["sent"] and result["rss_mb"]["growth"] < 200 and result["server_alive"])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
