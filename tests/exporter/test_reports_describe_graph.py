"""What ``export --json`` and ``inspect`` say about a model is what the written file holds.

References are read independently: LRN attributes straight from the ONNX nodes with onnx
(missing attributes take the defaults of onnx's own LRN schema), parameter counts from the
torch state_dict and from the ONNX initializers that hold weights.
"""

from __future__ import annotations

import json
import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

LRN_LAYOUTS = {"paper-lrn": 2, "paper-hand-lrn": 2}


def lrn_node_attributes(path) -> list[dict]:
    """size/alpha/beta/bias of every LRN node in ``path``, defaults from onnx's LRN schema."""
    schema = onnx.defs.get_schema("LRN")
    defaults = {name: helper.get_attribute_value(attr.default_value) for name, attr in schema.attributes.items() if attr.default_value.name}
    nodes = [n for n in onnx.load(str(path), load_external_data=False).graph.node if n.op_type == "LRN"]
    return [{**defaults, **{a.name: helper.get_attribute_value(a) for a in n.attribute}} for n in nodes]


def same_lrn(reported: dict, node: dict) -> bool:
    return reported["size"] == node["size"] and all(reported[k] == pytest.approx(node[k], rel=1e-6) for k in ("alpha", "beta", "bias"))


@pytest.mark.slow
@pytest.mark.parametrize("layout", list(LRN_LAYOUTS))
def test_export_and_inspect_report_the_lrn_nodes_of_the_written_file(layout, seed_exports, seed_checkpoints, cli):
    out, summary = seed_exports(layout)
    nodes = lrn_node_attributes(out)
    assert len(nodes) == LRN_LAYOUTS[layout] == summary["lrn_nodes"]
    # export --json: each executed LRN site's ONNX parameters, in graph order
    exported = [site["onnx_lrn"] for site in summary["lrn_sites"]]
    assert len(exported) == len(nodes) and all(same_lrn(r, n) for r, n in zip(exported, nodes)), (exported, nodes)
    # inspect of the ONNX file, JSON and table
    data = json.loads(cli.ok("inspect", out, "--json").stdout)
    assert len(data["lrn_nodes"]) == len(nodes)
    assert all(same_lrn(r, n) for r, n in zip(data["lrn_nodes"], nodes)), (data["lrn_nodes"], nodes)
    table = " ".join(cli.ok("inspect", out).stdout.split())  # the table wraps long rows: compare word by word
    for node in nodes:
        assert f"size={node['size']} alpha={node['alpha']:g} beta={node['beta']:g} bias={node['bias']:g}" in table
    # inspect of the checkpoint: what export will write for each site
    checkpoint = json.loads(cli.ok("inspect", seed_checkpoints(layout, 10)[0], "--json").stdout)
    predicted = [site["onnx_lrn"] for site in checkpoint["lrn"]]
    assert len(predicted) == len(nodes) and all(same_lrn(r, n) for r, n in zip(predicted, nodes)), (predicted, nodes)


def weight_count(path) -> int:
    """Elements of the float initializers: the weights and biases of an FP32 export."""
    model = onnx.load(str(path))
    return sum(numpy_helper.to_array(i).size for i in model.graph.initializer if i.data_type == TensorProto.FLOAT)


def test_checkpoint_and_its_export_report_the_same_parameter_count(cli, half_width, half_width_onnx):
    path, model, _ = half_width
    expected = sum(v.numel() for v in model.state_dict().values())
    assert weight_count(half_width_onnx) == expected  # the reference: the export holds exactly these weights
    from_checkpoint = json.loads(cli.ok("inspect", path, "--json").stdout)
    from_onnx = json.loads(cli.ok("inspect", half_width_onnx, "--json").stdout)
    assert from_checkpoint["parameters"] == expected
    assert from_onnx["parameters"] == expected
    # The graph's other initializers (the Reshape target shape) are reported apart, not hidden.
    others = [i for i in onnx.load(str(half_width_onnx)).graph.initializer if i.data_type != TensorProto.FLOAT]
    assert from_onnx["constants"] == {"tensors": len(others), "values": sum(int(np.prod(i.dims)) for i in others)}
    table = " ".join(cli.ok("inspect", half_width_onnx).stdout.split())
    assert re.search(rf"parameters {expected:,} \(weights; plus {from_onnx['constants']['values']:,} value", table), table


def test_quantized_graph_counts_int8_weights_but_not_scales_or_shapes(tmp_path):
    """A hand-made QDQ graph: int8 weight + int32 bias are weights; scales, zero points, shapes are not."""
    from alexnet_deploy.exporter.inspect import inspect_onnx

    w = numpy_helper.from_array(np.ones((4, 6), np.int8), "w")
    b = numpy_helper.from_array(np.zeros(4, np.int32), "b")
    scale = numpy_helper.from_array(np.full(4, 0.1, np.float32), "scale")
    bias_scale = numpy_helper.from_array(np.full(4, 0.01, np.float32), "bias_scale")
    zero = numpy_helper.from_array(np.zeros(4, np.int8), "zero")
    bias_zero = numpy_helper.from_array(np.zeros(4, np.int32), "bias_zero")
    shape = numpy_helper.from_array(np.array([1, 6], np.int64), "shape")
    nodes = [
        helper.make_node("Reshape", ["input", "shape"], ["flat"]),
        helper.make_node("DequantizeLinear", ["w", "scale", "zero"], ["wf"], axis=0),
        helper.make_node("DequantizeLinear", ["b", "bias_scale", "bias_zero"], ["bf"], axis=0),
        helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "qdq", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 2, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])], [w, b, scale, bias_scale, zero, bias_zero, shape],
    )
    path = tmp_path / "qdq.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10), path)
    data = inspect_onnx(path)
    assert data["parameters"] == 4 * 6 + 4
    assert data["constants"] == {"tensors": 5, "values": 4 + 4 + 4 + 4 + 2}
