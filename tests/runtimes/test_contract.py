"""One contract, every runtime: describe itself, give the seed class's own logits, check its
input, convert other float dtypes, chunk batches beyond its limit, refuse to run once closed.

Runtimes that cannot run here (no GPU, no TensorRT, no openvino) skip with the reason; the
TensorRT case builds its engine from the same ONNX file.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from alexnet_deploy.errors import DependencyError, InputError
from torch_free import run_without_torch

HAS_CUDA = torch.cuda.is_available()
HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
HAS_ORT_CUDA = HAS_CUDA and "CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers()
NO_CUDA = "needs a CUDA GPU (torch.cuda.is_available() is False)"

KINDS = [
    "torch",
    "ort",
    pytest.param("openvino", marks=pytest.mark.skipif(not HAS_OPENVINO, reason="openvino is not installed (pip install 'alexnet-deploy[openvino]')")),
    pytest.param("torch-compile", marks=pytest.mark.slow),
    pytest.param("torch-cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not HAS_CUDA, reason=NO_CUDA)]),
    pytest.param("ort-cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not HAS_ORT_CUDA, reason="needs a CUDA GPU and onnxruntime-gpu (this onnxruntime has no CUDAExecutionProvider)")]),
    pytest.param("trt", marks=[pytest.mark.gpu, pytest.mark.skipif(not (HAS_CUDA and HAS_TENSORRT), reason="needs TensorRT (pip install 'alexnet-deploy[tensorrt]') and a CUDA GPU")]),
]


def _open(kind, half_width, half_width_onnx, tmp_path_factory):
    from alexnet_deploy.runtimes import OrtRuntime, TorchRuntime

    _, model, size = half_width
    if kind == "torch":
        return TorchRuntime(model, size, "half")
    if kind == "torch-compile":
        return TorchRuntime(model, size, "half", compile=True)
    if kind == "torch-cuda":
        return TorchRuntime(model, size, "half", device="cuda")
    if kind == "ort":
        return OrtRuntime(half_width_onnx)
    if kind == "ort-cuda":
        return OrtRuntime(half_width_onnx, device="cuda")
    if kind == "openvino":
        from alexnet_deploy.runtimes import OpenVinoRuntime

        return OpenVinoRuntime(half_width_onnx)
    if kind == "trt":
        from alexnet_deploy.build import BatchProfile, build_engine
        from alexnet_deploy.runtimes import TrtRuntime

        engine = tmp_path_factory.mktemp("contract-trt") / "half.engine"
        build_engine(half_width_onnx, engine, BatchProfile(1, 4, 8))
        return TrtRuntime(engine)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", KINDS)
def test_runtime_contract(kind, half_width, half_width_onnx, tmp_path_factory):
    _, model, size = half_width
    runtime = _open(kind, half_width, half_width_onnx, tmp_path_factory)
    info = runtime.info()
    assert info.input_shape[1:] == (3, size, size) and info.precision == "fp32" and info.min_batch == 1
    assert info.runtime == kind.replace("-cuda", "") and info.device == ("cuda" if "cuda" in kind or kind == "trt" else "cpu")

    batch = np.random.default_rng(0).standard_normal((3, 3, size, size), dtype=np.float32)
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(batch)).numpy()
    got = runtime.run(batch)
    assert got.dtype == np.float32 and got.shape == expected.shape
    # TensorRT may pick TF32 kernels for FP32 on Ampere and newer
    tolerance = 1e-2 if kind == "trt" else 1e-4
    np.testing.assert_allclose(got, expected, rtol=tolerance, atol=tolerance * np.abs(expected).max())

    with pytest.raises(InputError, match="shape"):
        runtime.run(batch[:, :, :10])
    with pytest.raises(InputError, match="dtype"):
        runtime.run(batch.astype(np.uint8))
    as_float64 = runtime.run(batch.astype(np.float64))  # other float dtypes are converted
    assert as_float64.dtype == np.float32
    np.testing.assert_allclose(as_float64, got, rtol=tolerance, atol=tolerance * np.abs(expected).max())

    # run_all: more rows than any one call takes, in chunks; only real rows come back, in order.
    # torch.compile (dynamic=False) compiles once per batch shape, ten seconds each here: chunks of
    # the 3 rows already run keep it to one compile; the others take chunks of 5, 5 and 2.
    many = np.concatenate([batch] * 4)
    chunk = 3 if kind == "torch-compile" else 5
    np.testing.assert_allclose(runtime.run_all(many, chunk), np.concatenate([got] * 4), rtol=tolerance, atol=tolerance * np.abs(expected).max())

    runtime.close()
    with pytest.raises(InputError, match="closed"):
        runtime.run(batch)


def test_gpu_runtimes_fail_cleanly_without_a_gpu(half_width, half_width_onnx, tmp_path_factory):
    if HAS_CUDA:
        pytest.skip("this machine has a GPU")
    for kind in ("torch-cuda", "ort-cuda"):
        with pytest.raises(DependencyError) as caught:
            _open(kind, half_width, half_width_onnx, tmp_path_factory)
        assert caught.value.fix and "\n" not in caught.value.problem


def test_runtime_side_imports_without_torch(half_width_onnx):
    """The onnxruntime side (runtimes, preprocessing, metadata) works where importing torch fails."""
    code = (
        "import numpy as np\n"
        "from alexnet_deploy.runtimes import OrtRuntime\n"
        "from alexnet_deploy.record import read_record_from_path\n"
        "from alexnet_deploy.preprocess import preprocess_batch\n"
        f"r = OrtRuntime({str(half_width_onnx)!r}); rec = read_record_from_path({str(half_width_onnx)!r})\n"
        "print(r.run(np.zeros((1, 3, 224, 224), np.float32)).shape, rec.labels[0])\n"
    )
    assert run_without_torch(code) == "(1, 5) daisy"
