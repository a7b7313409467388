"""Load on ``alexnet serve`` next to direct ``Classifier`` calls (recorded in BENCHMARKS.md).

``python -m alexnet_deploy.bench.serve_load MODEL.onnx [--requests N] [--write BENCHMARKS.md]``
starts ``alexnet serve`` in a subprocess, then for 1, 8 and 32 concurrent clients (threads,
each with its own tritonclient HTTP connection, binary tensors) sends batch-1 requests and
reports requests/s and latency p50/p99; the same concurrency calling one shared
``Classifier.logits`` in-process gives the direct baseline.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np


def _drive(worker, clients: int, per_client: int) -> tuple[float, list[float]]:
    """Run ``worker(client_index) -> list of latencies`` on ``clients`` threads; (requests/s, all latencies ms)."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    barrier = threading.Barrier(clients + 1)

    def run(index):
        call = worker(index)
        barrier.wait()
        for _ in range(per_client):
            start = time.perf_counter()
            call()
            latencies[index].append((time.perf_counter() - start) * 1000)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    flat = [v for values in latencies for v in values]
    return len(flat) / elapsed, flat


def measure(model: Path, requests: int = 96, concurrency=(1, 8, 32), max_delay_ms: float = 5.0) -> list[dict]:
    """One row per (mode, clients): requests/s, p50 and p99 latency in ms."""
    import tritonclient.http as http

    from alexnet_deploy.classifier import Classifier

    classifier = Classifier(model)
    sample = np.random.default_rng(0).standard_normal((1, 3, classifier.input_size, classifier.input_size), dtype=np.float32)
    process = subprocess.Popen([sys.executable, "-m", "alexnet_deploy", "serve", str(model), "--port", "0", "--max-delay-ms", str(max_delay_ms)],
                               stdout=subprocess.PIPE, text=True, env=dict(os.environ, COLUMNS="300"))
    try:
        url = urlparse(process.stdout.readline().split(" at ", 1)[1].strip())
        address = f"{url.hostname}:{url.port}"
        rows = []
        for clients in concurrency:
            per_client = max(2, requests // clients)

            def served(index):
                client = http.InferenceServerClient(address, connection_timeout=120, network_timeout=120)
                item = http.InferInput("input", list(sample.shape), "FP32")
                item.set_data_from_numpy(sample)
                return lambda: client.infer("alexnet", [item])

            def direct(index):
                return lambda: classifier.logits(sample)

            for mode, worker in (("direct Classifier", direct), ("alexnet serve", served)):
                worker(0)()  # warm-up
                rate, latencies = _drive(worker, clients, per_client)
                rows.append({"mode": mode, "clients": clients, "requests": len(latencies), "requests_per_s": rate,
                             "p50_ms": float(np.percentile(latencies, 50)), "p99_ms": float(np.percentile(latencies, 99))})
        return rows
    finally:
        process.terminate()
        process.wait(timeout=30)


def markdown(rows: list[dict], model: Path, max_delay_ms: float) -> str:
    from alexnet_deploy.bench.host import cpu_name

    lines = [
        "## Serving load (`python -m alexnet_deploy.bench.serve_load`)",
        "",
        f"{time.strftime('%Y-%m-%d')}, {cpu_name()}, {os.cpu_count()} cores. Model {model.name}; batch-1 requests; "
        f"`alexnet serve` in its own process (--max-delay-ms {max_delay_ms:g}, binary tensors via tritonclient HTTP), "
        "clients as threads in the benchmark process; the direct rows call one shared `Classifier.logits` from the same threads.",
        "",
        "| mode | clients | requests | requests/s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(f"| {row['mode']} | {row['clients']} | {row['requests']} | {row['requests_per_s']:.1f} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--max-delay-ms", type=float, default=5.0)
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = measure(args.model, args.requests, max_delay_ms=args.max_delay_ms)
    section = markdown(rows, args.model, args.max_delay_ms)
    print(section)
    if args.write:
        from alexnet_deploy.bench.report import write_section

        write_section(args.write, section)


if __name__ == "__main__":
    main()
