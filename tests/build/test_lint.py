"""The CPU-side TensorRT lint: a clean export passes, each broken graph is named by rule and node."""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from alexnet_deploy.build.lint import lint_onnx


def _graph(nodes, inits, input_shape=("batch", 4), opset=18, value_info=()):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [numpy_helper.from_array(v, k) for k, v in inits.items()],
        value_info=list(value_info),
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)

def _rules(model):
    return sorted({f.rule for f in lint_onnx(model)})

def test_lint_passes_a_clean_export(half_width_onnx):
    assert lint_onnx(onnx.load(str(half_width_onnx))) == []

def test_lint_catches_each_broken_graph():
    scale = np.array(0.1, np.float32)
    unsupported = _graph([helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"], name="dql"), helper.make_node("Identity", ["s"], ["y"])], {})
    custom = _graph([helper.make_node("FancyOp", ["x"], ["y"], domain="com.example", name="fancy")], {})
    asymmetric = _graph([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q"), helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq")],
                        {"s": scale, "z": np.array(7, np.int8)})
    uint8 = _graph([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q"), helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq")],
                   {"s": scale, "z": np.array(0, np.uint8)})
    int32_bias = _graph([helper.make_node("DequantizeLinear", ["b", "s", "z"], ["bf"], name="bias_dq"), helper.make_node("Add", ["x", "bf"], ["y"])],
                        {"b": np.arange(4, dtype=np.int32), "s": np.full(4, 0.01, np.float32), "z": np.zeros(4, np.int32)})
    lrn = _graph([helper.make_node("LRN", ["x"], ["y"], size=4, alpha=1e-4, beta=0.75, bias=2.0, name="norm1")], {}, input_shape=("batch", 8, 5, 5))
    dynamic = _graph([helper.make_node("Relu", ["x"], ["y"])], {}, input_shape=("batch", 3, "height", 224))
    old_opset = _graph([helper.make_node("Relu", ["x"], ["y"])], {}, opset=7)
    assert _rules(unsupported) == ["op-supported"] and "dql" in str(lint_onnx(unsupported)[0])
    assert _rules(custom) == ["op-supported"] and "com.example" in lint_onnx(custom)[0].message
    assert _rules(asymmetric) == ["qdq-zero-point"] and {f.node for f in lint_onnx(asymmetric)} == {"q", "dq"}
    assert _rules(uint8) == ["qdq-uint8"]
    assert _rules(int32_bias) == ["qdq-int32"]
    assert lint_onnx(int32_bias)[0].node == "bias_dq"
    assert _rules(lrn) == ["lrn-window"] and "size 4" in lint_onnx(lrn)[0].message
    assert _rules(dynamic) == ["dynamic-dims"] and "dimension 2" in lint_onnx(dynamic)[0].message
    assert _rules(old_opset) == ["opset"]
    weight_qdq = _graph([  # a weight quantized in the graph with per-channel scales, as pytorch-quantization exports it
        helper.make_node("QuantizeLinear", ["w", "ws", "wz"], ["wq"], axis=0, name="wq"), helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=0, name="wdq"),
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="xq"), helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="xdq"),
        helper.make_node("Gemm", ["xd", "wd"], ["y"], transB=1)],
        {"w": np.ones((3, 4), np.float32), "ws": np.full(3, 0.1, np.float32), "wz": np.zeros(3, np.int8), "s": scale, "z": np.array(0, np.int8)})
    assert lint_onnx(weight_qdq) == []
    per_channel_activation = _graph([helper.make_node("QuantizeLinear", ["x", "ws", "wz"], ["q"], axis=1, name="aq"), helper.make_node("DequantizeLinear", ["q", "ws", "wz"], ["y"], axis=1)],
                                    {"ws": np.full(4, 0.1, np.float32), "wz": np.zeros(4, np.int8)})
    assert "aq" in {f.node for f in lint_onnx(per_channel_activation) if f.rule == "qdq-scale"}
    good_lrn = _graph([helper.make_node("LRN", ["x"], ["y"], size=5, alpha=1e-4, beta=0.75, bias=2.0)], {}, input_shape=("batch", 8, 5, 5))
    assert lint_onnx(good_lrn) == []

def test_build_check_only_cli(cli, half_width_onnx, tmp_path):
    assert "PASS" in cli.ok("build", half_width_onnx, "--check-only").stdout
    proto = onnx.load(str(half_width_onnx))
    proto.graph.input[0].type.tensor_type.shape.dim[3].dim_param = "width"
    broken = tmp_path / "dynamic_width.onnx"
    onnx.save(proto, str(broken))
    result = cli.fails(1, "build", broken, "--check-only")
    assert "[dynamic-dims] input: dimension 3 is dynamic (width)" in result.stderr
    assert not (tmp_path / "dynamic_width.engine").exists()
    # --json carries the findings of a failed lint too (and the exit code stays 1)
    failed = cli.fails(1, "build", broken, "--check-only", "--json")
    data = json.loads(failed.stdout)
    assert data["passed"] is False and {"rule": "dynamic-dims", "node": "input"}.items() <= data["lint"][0].items()
    assert json.loads(cli.ok("build", half_width_onnx, "--check-only", "--json").stdout)["passed"] is True
