"""LRN: conventions mapped exactly, one ONNX node per executed LRN, uncalled modules ignored."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from alexnet_deploy.exporter.lrn import find_lrn_sites, map_hand_written, lrn_like_params, reference_lrn
from seed_models import LRN as Seed001LRN
from seed_models import Seed002AlexNet


@pytest.mark.parametrize("size", [1, 3, 5, 7])
def test_reference_matches_torch_for_odd_sizes(size):
    x = torch.randn(2, 12, 5, 5) * 3
    torch.testing.assert_close(reference_lrn(x, size, 1e-2, 0.75, 2.0), F.local_response_norm(x, size, 1e-2, 0.75, 2.0), rtol=1e-5, atol=1e-6)


def test_reference_matches_onnxruntime_lrn():
    """reference_lrn has ONNX semantics: compare with onnxruntime's own LRN kernel."""
    node = onnx.helper.make_node("LRN", ["x"], ["y"], size=3, alpha=0.3, beta=0.6, bias=1.5)
    graph = onnx.helper.make_graph([node], "g", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 9, 3, 3])], [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 9, 3, 3])])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)], ir_version=10)
    x = np.random.default_rng(0).standard_normal((1, 9, 3, 3)).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(reference_lrn(torch.from_numpy(x), 3, 0.3, 0.6, 1.5).numpy(), want, rtol=1e-5, atol=1e-6)


def test_seed001_hand_written_lrn_maps_to_paper_parameters():
    module = Seed001LRN(96)
    params = lrn_like_params(module)
    onnx_params, how = map_hand_written(module, params, (1, 96, 13, 13))
    assert onnx_params == {"size": 5, "alpha": pytest.approx(5e-4), "beta": 0.75, "bias": 2.0}
    assert "paper" in how
    x = torch.rand(2, 96, 6, 6) * 40
    torch.testing.assert_close(reference_lrn(x, **onnx_params), module(x), rtol=1e-5, atol=1e-6)


class TinyNet(nn.Module):
    """A small net whose LRN flavour is chosen per test."""

    def __init__(self, lrn: str):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.lrn_kind = lrn
        self.norm = {"module": nn.LocalResponseNorm(5, alpha=1e-3, beta=0.75, k=1.5), "even": nn.LocalResponseNorm(4, alpha=1e-3, beta=0.75, k=1.5), "hand": Seed001LRN(16), "none": nn.Identity(), "functional": nn.Identity()}[lrn]
        self.unused = nn.LocalResponseNorm(3)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        x = F.local_response_norm(x, 3, alpha=2e-3) if self.lrn_kind == "functional" else self.norm(x)
        return self.head(x.mean(dim=(2, 3)))


def _export_tiny(kind, tmp_path, cli):
    torch.manual_seed(0)
    model = TinyNet(kind).eval()
    source = tmp_path / "tiny.py"
    source.write_text(
        "import torch\nimport torch.nn.functional as F\nfrom torch import nn\nimport sys\nsys.path.insert(0, %r)\nfrom seed_models import LRN as Seed001LRN\n" % str(__import__("pathlib").Path(__file__).resolve().parents[1])
        + __import__("inspect").getsource(TinyNet)
    )
    ckpt = tmp_path / "tiny.pth"
    torch.save(model.state_dict(), ckpt)
    out = tmp_path / "tiny.onnx"
    result = cli.ok("export", ckpt, "-o", out, "--model", f"{source}:TinyNet", "--model-kwargs", f"lrn={kind!r}", "--input-size", "20", "--json")
    x = torch.randn(3, 3, 20, 20) * 4
    with torch.no_grad():
        want = model(x).numpy()
    got = ort.InferenceSession(str(out)).run(None, {"input": x.numpy()})[0]
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    return onnx.load(str(out)), __import__("json").loads(result.stdout)


@pytest.mark.parametrize("kind, nodes", [("module", 1), ("functional", 1), ("hand", 1), ("none", 0)])
def test_each_executed_lrn_becomes_one_node(kind, nodes, tmp_path, cli):
    model, summary = _export_tiny(kind, tmp_path, cli)
    assert sum(n.op_type == "LRN" for n in model.graph.node) == nodes
    assert summary["lrn_nodes"] == nodes
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # batch stays dynamic, also for the looped LRN


def test_even_size_keeps_exact_decomposition_and_warns(tmp_path, cli):
    model, summary = _export_tiny("even", tmp_path, cli)
    assert not any(n.op_type == "LRN" for n in model.graph.node)
    assert any("even size" in w for w in summary["warnings"])


def test_uncalled_lrn_modules_are_not_sites():
    model = Seed002AlexNet(5).eval()
    assert find_lrn_sites(model, torch.randn(1, 3, 224, 224)) == []


class SharedLRN(nn.Module):
    """One LRN module instance called twice."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.norm = nn.LocalResponseNorm(3, alpha=1e-2, k=1.0)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        x = self.norm(torch.relu(self.conv1(x)))
        x = self.norm(torch.relu(self.conv2(x)))
        return self.head(x.mean(dim=(2, 3)))


def test_a_module_called_twice_gives_two_nodes():
    from alexnet_deploy.checkpoints.load import Checkpoint
    from alexnet_deploy.exporter.onnx_export import export_model
    from alexnet_deploy.record import Preprocessing
    from alexnet_deploy.checkpoints.resolve import ResolvedModel

    torch.manual_seed(0)
    model = SharedLRN().eval()
    resolved = ResolvedModel(model, model, "custom:SharedLRN", None, 2, 16, Preprocessing(16, 16), Checkpoint(__import__("pathlib").Path("x.pth"), "0" * 64, "state_dict", model.state_dict()))
    result = export_model(resolved, ["a", "b"])
    assert result.lrn_nodes == 2
    x = torch.randn(2, 3, 16, 16)
    got = ort.InferenceSession(result.model_proto.SerializeToString()).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-4, atol=1e-5)
