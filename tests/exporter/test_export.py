"""Export of every seed layout: parity with the seed class's own forward, LRN nodes, graph checks."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from seed_models import GoogLeNet, Seed000AlexNet, Seed001AlexNet, alive

# layout -> LRN nodes the export must contain
LRN_NODES = {"torchvision": 0, "caffe-227": 0, "paper-lrn": 2, "paper-hand-lrn": 2, "layers-fc": 0, "half-width": 0}


def independent_parity(onnx_path, model, size, batches=(1, 5), seed=1):
    """Max relative error of onnxruntime against ``model``'s own forward, per batch size."""
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    errors = {}
    generator = torch.Generator().manual_seed(seed)
    for batch in batches:
        x = torch.randn(batch, 3, size, size, generator=generator)
        with torch.no_grad():
            ref = model(x).numpy()
        got = session.run(["logits"], {"input": x.numpy()})[0]
        assert got.shape == ref.shape
        assert np.abs(ref).max() > 0, "dead network: the test would prove nothing"
        errors[batch] = float(np.abs(got - ref).max() / np.abs(ref).max())
    return errors


def check_graph(path):
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    (inp,) = model.graph.input
    assert inp.name == "input" and model.graph.output[0].name == "logits"
    assert inp.type.tensor_type.shape.dim[0].dim_param, "batch must be dynamic"
    return model


@pytest.mark.slow
@pytest.mark.parametrize("layout", list(LRN_NODES))
def test_every_seed_layout_exports_with_parity(layout, seed_checkpoints, seed_exports):
    _, model, size = seed_checkpoints(layout, 10)
    out, summary = seed_exports(layout)  # `alexnet export --json` of that checkpoint, shared with the report tests
    assert summary["verification"]["passed"] is True
    assert summary["layout"] == layout
    graph = check_graph(out)
    assert sum(n.op_type == "LRN" for n in graph.graph.node) == LRN_NODES[layout]
    errors = independent_parity(out, model, size)
    assert max(errors.values()) <= 1e-4, errors


@pytest.mark.slow
def test_paper_224_layout_matches_seed000_class_with_padding_2(store, cli):
    model = Seed000AlexNet(7)
    model.features[0].padding = (2, 2)  # the 224-input variant of the same keys
    alive(model, 3)
    path = store / "paper224.pth"
    torch.save({"state_dict": model.state_dict(), "epoch": 12, "optimizer": {"lr": 0.01}}, path)
    refused = cli.fails(2, "export", path)
    assert "--arch caffe-227 or --arch paper-224" in refused.stderr
    out = store / "paper224.onnx"
    cli.ok("export", path, "-o", out, "--arch", "paper-224")
    check_graph(out)
    assert max(independent_parity(out, model, 224).values()) <= 1e-4


@pytest.mark.slow
def test_seed001_lrn_nodes_carry_paper_parameters(seed_exports):
    out, _ = seed_exports("paper-hand-lrn")  # made here if no other test made it first
    nodes = [n for n in onnx.load(str(out)).graph.node if n.op_type == "LRN"]
    assert len(nodes) == LRN_NODES["paper-hand-lrn"]  # an export without LRN nodes must not pass vacuously
    attrs = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in nodes]
    # paper: alpha * sum over 5 channels == ONNX alpha/size * sum with alpha = 1e-4 * 5
    for a in attrs:
        assert a["size"] == 5 and a["alpha"] == pytest.approx(5e-4) and a["beta"] == pytest.approx(0.75) and a["bias"] == pytest.approx(2.0)


@pytest.mark.slow
def test_user_class_with_model_flag(tmp_path, cli):
    """seed 001's class through --model: its looped LRN still becomes LRN nodes, batch stays dynamic."""
    source = tmp_path / "train.py"
    text = open(__import__("seed_models").__file__).read()
    source.write_text(
        'import torch\nimport torch.nn as nn\ndevice = torch.device("cpu")\n'
        + text[text.index("class LRN"):text.index("class Seed002AlexNet")]
        + "\nif __name__ == '__main__':\n    raise SystemExit('training would start here')\n"
    )
    model = alive(Seed001AlexNet(4), 5)
    ckpt = tmp_path / "model.pth"
    torch.save(model.state_dict(), ckpt)
    out = tmp_path / "model.onnx"
    summary = json.loads(cli.ok("export", ckpt, "-o", out, "--model", f"{source}:Seed001AlexNet", "--json").stdout)
    assert summary["layout"] == "custom:Seed001AlexNet" and summary["lrn_nodes"] == 2
    assert max(independent_parity(out, model, 224, batches=(1, 3)).values()) <= 1e-4


@pytest.mark.slow
def test_googlenet_exports_and_verifies_through_model_flag(tmp_path, cli):
    """seed 004 is not an AlexNet: --model with kwargs makes the pipeline work for it."""
    source = tmp_path / "googlenet.py"
    text = open(__import__("seed_models").__file__).read()
    source.write_text("import torch\nfrom torch import nn\nfrom torch.nn import functional as F\n" + text[text.index("class Inception"):text.index("def torchvision_alexnet")])
    model = alive(GoogLeNet(in_channels=3, num_classes=6), 2)
    ckpt = tmp_path / "googlenet.pth"
    torch.save({"model": model.state_dict(), "epoch": 3}, ckpt)
    refused = cli.fails(2, "export", ckpt)
    assert "--model" in refused.stderr
    out = tmp_path / "googlenet.onnx"
    cli.ok("export", ckpt, "-o", out, "--model", f"{source}:GoogLeNet", "--model-kwargs", "in_channels=3,num_classes=6", "--input-size", "96")
    assert max(independent_parity(out, model, 96, batches=(1, 3)).values()) <= 1e-4
    verdict = cli.ok("verify", out, "--checkpoint", ckpt, "--model", f"{source}:GoogLeNet", "--json", "-")
    assert json.loads(verdict.stdout)["passed"] is True


def test_fixed_batch_export(half_width, tmp_path, cli):
    path, model, size = half_width
    out = tmp_path / "fixed.onnx"
    cli.ok("export", path, "-o", out, "--batch", "3")
    dims = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_value == 3
    assert max(independent_parity(out, model, size, batches=(3,)).values()) <= 1e-4


def test_half_width_export_parity_and_checker(half_width, half_width_onnx):
    _, model, size = half_width
    check_graph(half_width_onnx)
    assert max(independent_parity(half_width_onnx, model, size).values()) <= 1e-4


def test_no_node_leaks_local_paths(half_width_onnx):
    model = onnx.load(str(half_width_onnx))
    keys = {prop.key for node in model.graph.node for prop in node.metadata_props}
    values = " ".join(prop.value for node in model.graph.node for prop in node.metadata_props)
    assert not any("stack_trace" in k or "fx_node" in k for k in keys)
    assert str(half_width_onnx.parent) not in values and ".py" not in values
