"""Workarounds for bugs in the libraries the quantize stage relies on, each pinned by a test
that fails on the buggy path."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from alexnet_deploy.quantize import recipes


def _transpose_gemm_weights(model: onnx.ModelProto) -> int:
    """What onnxruntime's dynamic quantizer does to each Gemm(transB=1): transpose B in place."""
    weights = {init.name: init for init in model.graph.initializer}
    done = 0
    for node in model.graph.node:
        trans_b = [a for a in node.attribute if a.name == "transB" and a.i == 1]
        if node.op_type == "Gemm" and trans_b and node.input[1] in weights:
            init = weights[node.input[1]]
            init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(numpy_helper.to_array(init).T), init.name))
            trans_b[0].i = 0
            done += 1
    return done


def test_dynamic_int8_survives_stale_weight_shapes(half_width_onnx, tmp_path):
    """microsoft/onnxruntime#25890: onnxruntime before 1.32 failed quantize_dynamic on every
    Gemm(transB=1) model that went through quant_pre_process (all our exports): the weight's
    recorded shape goes stale when the quantizer transposes it, and strict shape inference
    refuses the model. The workaround drops the records before quantizing."""
    prepared = recipes._preprocessed(half_width_onnx, tmp_path)
    stale = onnx.load(str(prepared))
    assert {i.name for i in stale.graph.initializer} & {v.name for v in stale.graph.value_info}, "the buggy path needs weight shape records"
    assert _transpose_gemm_weights(stale) == 3
    with pytest.raises(onnx.shape_inference.InferenceError, match="differ"):  # the upstream failure, without the workaround
        onnx.shape_inference.infer_shapes(stale, strict_mode=True)

    cleaned = recipes._without_initializer_shapes(shutil.copy(prepared, tmp_path / "cleaned.onnx"))
    model = onnx.load(str(cleaned))
    assert not {i.name for i in model.graph.initializer} & {v.name for v in model.graph.value_info}
    assert _transpose_gemm_weights(model) == 3
    onnx.shape_inference.infer_shapes(model, strict_mode=True)  # passes: nothing stale left
    onnx.checker.check_model(model)
