"""alexnet inspect on checkpoints and ONNX files."""

from __future__ import annotations

import json




def test_inspect_checkpoint_json(cli, seed_checkpoints):
    path, model, _ = seed_checkpoints("paper-hand-lrn", 10)
    data = json.loads(cli.ok("inspect", path, "--json").stdout)
    assert data["layout"] == "paper-hand-lrn" and data["num_classes"] == 10 and data["input_size"] == 224
    assert data["parameters"] == sum(p.numel() for p in model.parameters())
    assert [s["name"] for s in data["lrn"]] == ["N1", "N2"]
    assert all(s["onnx_lrn"]["size"] == 5 for s in data["lrn"])

def test_inspect_ambiguous_checkpoint_names_the_choices(cli, seed_checkpoints):
    path, _, _ = seed_checkpoints("caffe-227", 10)
    result = cli.ok("inspect", path)
    assert "caffe-227" in result.stdout and "paper-224" in result.stdout
    refused = cli.fails(2, "export", path)
    assert "--arch caffe-227 or --arch paper-224" in refused.stderr and "padding" in refused.stderr


def test_inspect_with_an_arch_that_does_not_fit_is_refused_like_export(cli, seed_checkpoints):
    path, _, _ = seed_checkpoints("half-width", 10)
    exported = cli.fails(2, "export", path, "--arch", "torchvision")
    inspected = cli.fails(2, "inspect", path, "--arch", "torchvision", "--json")
    assert inspected.stdout == "" and inspected.stderr.splitlines()[0] == exported.stderr.splitlines()[0]
    assert json.loads(cli.ok("inspect", path, "--arch", "half-width", "--json").stdout)["layout"] == "half-width"

def test_inspect_onnx_json(cli, half_width_onnx):
    data = json.loads(cli.ok("inspect", half_width_onnx, "--json").stdout)
    assert data["kind"] == "onnx" and data["opset"] == 18 and data["layout"] == "half-width"
    assert data["inputs"][0] == {"name": "input", "dtype": "float32", "shape": ["batch", 3, 224, 224]}
    assert data["outputs"][0]["shape"] == ["batch", 5]
    assert data["op_histogram"]["Conv"] == 5 and data["op_histogram"]["Gemm"] == 3
    table = cli.ok("inspect", half_width_onnx).stdout
    assert "half-width" in table and "daisy" in table
