"""How much the bench harness and the runtime wrapper add to what they measure.

``python -m alexnet_deploy.bench.overhead MODEL.onnx``: the same onnxruntime session timed
bare (``session.run`` in a plain loop) and through ``alexnet bench``'s path
(``OrtRuntime.run`` inside the harness's timing loop), alternating in rounds; prints the
median latency of both and the difference in percent.
"""

from __future__ import annotations

import sys
import time

import numpy as np


def compare(model: str, batch: int, rounds: int = 7, iterations: int = 20) -> tuple[float, float]:
    """(bare median ms, harness median ms) for ``model`` at ``batch``."""
    from alexnet_deploy.bench.harness import TimingSettings, time_runtime
    from alexnet_deploy.runtimes.ort import OrtRuntime

    runtime = OrtRuntime(model)
    session = runtime.session
    shape = (batch,) + tuple(runtime.info().input_shape[1:])
    data = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    feed = {runtime.info().input_name: data}
    session.run(None, feed)
    bare, harness = [], []
    for _ in range(rounds):
        times = []
        for _ in range(iterations):
            start = time.perf_counter()
            session.run(None, feed)
            times.append((time.perf_counter() - start) * 1000)
        bare.append(float(np.median(times)))
        harness.append(float(np.median(time_runtime(runtime, batch, TimingSettings(warmup_s=0.0, iterations=iterations)))))
    return float(np.median(bare)), float(np.median(harness))


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="an ONNX model file (e.g. from alexnet export)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    for batch in (1, 32):
        bare, harness = compare(args.model, batch)
        print(f"batch {batch}: bare session.run {bare:.3f} ms, alexnet bench path {harness:.3f} ms, overhead {100 * (harness - bare) / bare:+.2f}%")


if __name__ == "__main__":
    main()
