"""The GEMM-ceiling models bench builds itself load in every onnxruntime the package supports."""

from __future__ import annotations

import onnx
import onnxruntime
import pytest

from alexnet_deploy.bench import host

# onnxruntime 1.18, the oldest the package declares, reads models up to IR version 10.
OLDEST_ORT_MAX_IR = 10


@pytest.mark.parametrize("op", ["MatMul", "MatMulInteger"])
def test_gemm_ceiling_models_carry_an_ir_version_old_runtimes_read(op, monkeypatch):
    """onnx.helper stamps its newest IR version (14 with onnx 1.23) unless told otherwise;
    onnxruntime 1.30 refused such a model, so `bench` died before measuring anything."""
    seen = []
    real = onnxruntime.InferenceSession

    def recording(model_bytes, *args, **kwargs):
        seen.append(onnx.load_from_string(model_bytes))
        return real(model_bytes, *args, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", recording)
    monkeypatch.setattr(host, "GEMM_SIZE", 8)
    host._ort_gemm(op, 1)()
    (model,) = seen
    assert model.ir_version <= OLDEST_ORT_MAX_IR
    onnx.checker.check_model(model)
