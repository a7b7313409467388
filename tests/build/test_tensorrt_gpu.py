"""TensorRT end to end on a GPU: ``alexnet build``, ``bench --runtime trt``, logits against onnxruntime.

Marked ``gpu``; skipped with the exact missing piece (the tensorrt package, torch, or a
CUDA device) on machines without them, so a skip never hides which one it was.
"""

from __future__ import annotations

import json

import numpy as np
import pytest


def _missing() -> str | None:
    """Why TensorRT engines cannot be built and run here, or None when they can."""
    try:
        import tensorrt
    except ImportError as exc:
        return f"TensorRT is not installed (import tensorrt: {exc}); pip install 'alexnet-deploy[tensorrt]'"
    try:
        import torch
    except ImportError:
        return f"torch is not installed (the trt runtime moves data with torch); TensorRT {tensorrt.__version__} is"
    if not torch.cuda.is_available():
        return f"no CUDA device visible to torch {torch.__version__} (CUDA build {torch.version.cuda}); TensorRT {tensorrt.__version__} is installed"
    return None


MISSING = _missing()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(MISSING is not None, reason=MISSING or "")]


@pytest.fixture(scope="module")
def engine(half_width_onnx, tmp_path_factory, cli):
    """The small half-width export built into an engine (batch 1..8) through the CLI."""
    out = tmp_path_factory.mktemp("trt") / "half.engine"
    result = json.loads(cli.ok("build", half_width_onnx, "-o", out, "--min-batch", 1, "--opt-batch", 4, "--max-batch", 8, "--json").stdout)
    assert out.is_file() and out.stat().st_size > 0
    sidecar = json.loads((out.parent / (out.name + ".json")).read_text())
    assert sidecar["profile"] == {"min": 1, "opt": 4, "max": 8}
    assert result is not None
    return out


def test_engine_logits_match_onnxruntime(engine, half_width_onnx):
    import onnxruntime as ort

    from alexnet_deploy.build.engine import TrtRuntime

    session = ort.InferenceSession(str(half_width_onnx), providers=["CPUExecutionProvider"])
    batch = np.random.default_rng(0).standard_normal((5, 3, 224, 224), dtype=np.float32)
    reference = session.run(["logits"], {"input": batch})[0]
    with TrtRuntime(engine) as runtime:
        got = runtime.run(batch)
    assert got.shape == reference.shape
    assert np.abs(reference).max() > 0
    # FP32 engines may use TF32 kernels: close, not bit-equal, and the same top-1 class.
    assert np.abs(got - reference).max() / np.abs(reference).max() <= 1e-2
    assert (got.argmax(axis=1) == reference.argmax(axis=1)).all()


def test_bench_runs_the_engine_at_every_batch(engine, cli):
    data = json.loads(cli.ok("bench", engine, "--runtime", "trt", "--batch", "1,8", "--iterations", 3, "--warmup", 0, "--json", "-").stdout)
    assert [(r["runtime"], r["batch"], r["device"]) for r in data["results"]] == [("trt", 1, "cuda"), ("trt", 8, "cuda")]
    assert all(r["iterations"] == 3 and r["latency_ms"]["min"] > 0 for r in data["results"])
    assert data["machine"]["gpu"] and "tensorrt" in data["machine"]["versions"]


def test_bench_trt_on_an_onnx_file_builds_and_caches_an_engine(half_width_onnx, tmp_path, cli):
    model = tmp_path / "copy.onnx"
    model.write_bytes(half_width_onnx.read_bytes())
    data = json.loads(cli.ok("bench", model, "--runtime", "trt", "--batch", 2, "--iterations", 2, "--warmup", 0, "--json", "-").stdout)
    assert [(r["runtime"], r["batch"]) for r in data["results"]] == [("trt", 2)]
    cached = tmp_path / "copy.engine"
    assert cached.is_file()
    built = cached.stat().st_mtime_ns
    cli.ok("bench", model, "--runtime", "trt", "--batch", 2, "--iterations", 2, "--warmup", 0, "--json", "-")
    assert cached.stat().st_mtime_ns == built  # the second run reused the engine built from the same file
