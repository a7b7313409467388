"""Runtimes behind one interface, bench statistics and JSON, the TensorRT lint, and clean errors
for what cannot run here (GPU and TensorRT paths skip with a reason on machines without them)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from alexnet_deploy.build.lint import lint_onnx

HAS_CUDA = torch.cuda.is_available()
try:
    import openvino  # noqa: F401

    HAS_OPENVINO = True
except ImportError:
    HAS_OPENVINO = False


# ---------------------------------------------------------------- runtime contract

def _runtime(kind, half_width, half_width_onnx):
    from alexnet_deploy.runtimes.ort import OrtRuntime
    from alexnet_deploy.runtimes.torch_runtime import TorchRuntime

    path, model, size = half_width
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
        from alexnet_deploy.runtimes.openvino import OpenVinoRuntime

        return OpenVinoRuntime(half_width_onnx)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["torch", "ort", pytest.param("openvino", marks=pytest.mark.skipif(not HAS_OPENVINO, reason="openvino is not installed (pip install 'alexnet-deploy[openvino]')")), pytest.param("torch-compile", marks=pytest.mark.slow), pytest.param("torch-cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")),
                                  pytest.param("ort-cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU and onnxruntime-gpu"))])
def test_runtime_contract(kind, half_width, half_width_onnx):
    """Every runtime: describes itself, gives the seed class's own logits, enforces its limits, closes."""
    path, model, size = half_width
    runtime = _runtime(kind, half_width, half_width_onnx)
    info = runtime.info()
    assert info.input_shape[1:] == (3, size, size) and info.precision == "fp32" and info.min_batch == 1
    assert info.runtime == kind.replace("-cuda", "") and info.device == ("cuda" if "cuda" in kind else "cpu")
    batch = np.random.default_rng(0).standard_normal((3, 3, size, size), dtype=np.float32)
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(batch)).numpy()
    got = runtime.run(batch)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    from alexnet_deploy.errors import InputError

    with pytest.raises(InputError, match="shape"):
        runtime.run(batch[:, :, :10])
    runtime.close()
    with pytest.raises(InputError, match="closed"):
        runtime.run(batch)


def test_gpu_runtimes_fail_cleanly_without_a_gpu(half_width, half_width_onnx):
    if HAS_CUDA:
        pytest.skip("this machine has a GPU")
    from alexnet_deploy.errors import DependencyError

    for kind in ("torch-cuda", "ort-cuda"):
        with pytest.raises(DependencyError) as caught:
            _runtime(kind, half_width, half_width_onnx)
        assert caught.value.fix and "\n" not in caught.value.problem


# ---------------------------------------------------------------- statistics

def test_latency_stats_against_numpy_and_hand_values():
    from alexnet_deploy.bench.stats import latency_stats, throughput

    samples = np.arange(1.0, 101.0)  # 1..100 ms
    stats = latency_stats(samples)
    assert stats == pytest.approx({"mean": 50.5, "p50": 50.5, "p90": 90.1, "p99": 99.01, "min": 1.0, "max": 100.0})
    rng = np.random.default_rng(1)
    skewed = rng.lognormal(1.0, 0.5, 1001)
    stats = latency_stats(skewed)
    assert stats["p99"] == pytest.approx(np.percentile(skewed, 99)) and stats["mean"] == pytest.approx(skewed.mean())
    assert stats["p50"] == pytest.approx(np.sort(skewed)[500])  # odd count: the middle sample
    assert throughput(32, [10.0, 10.0]) == pytest.approx(3200.0)


def test_timing_loop_excludes_warmup_and_counts_iterations():
    from alexnet_deploy.bench.harness import TimingSettings, _loop

    calls = []

    def step():
        calls.append(1)
        return float(len(calls))

    samples = _loop(step, TimingSettings(warmup_s=0.0, iterations=4))
    assert samples == [2.0, 3.0, 4.0, 5.0]  # the first call was the warm-up


# ---------------------------------------------------------------- bench JSON / CLI

def test_bench_json_schema_and_runtimes_agree(cli, half_width, half_width_onnx, tmp_path):
    csv_path, plot = tmp_path / "b.csv", tmp_path / "b.png"
    result = cli.ok("bench", half_width[0], half_width_onnx, "--runtime", "torch,ort", "--batch", "1,2", "--iterations", 3, "--warmup", 0,
                    "--json", "-", "--csv", csv_path, "--plot", plot, "--threads", 1)
    data = json.loads(result.stdout)
    assert set(data["machine"]) >= {"cpu", "cores", "threads", "versions", "date", "gpu"} and data["machine"]["threads"] == 1
    assert "onnxruntime" in data["machine"]["versions"]
    assert [(r["runtime"], r["batch"]) for r in data["results"]] == [("torch", 1), ("torch", 2), ("ort", 1), ("ort", 2)]
    for row in data["results"]:
        assert set(row) >= {"runtime", "model", "precision", "batch", "latency_ms", "throughput_ips", "iterations"}
        assert set(row["latency_ms"]) == {"mean", "p50", "p90", "p99", "min", "max"} and row["iterations"] == 3
        lat = row["latency_ms"]
        assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert row["throughput_ips"] == pytest.approx(row["batch"] * 1000 / lat["mean"])
    assert data["results"][1]["speedup"] == 1.0 and data["results"][1]["baseline"].startswith("torch ")
    ort_b1 = data["results"][2]
    assert ort_b1["speedup"] == pytest.approx(ort_b1["throughput_ips"] / data["results"][0]["throughput_ips"])
    assert len(csv_path.read_text().strip().splitlines()) == 5
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_reports_what_cannot_run(cli, half_width_onnx):
    result = cli.fails(2, "bench", half_width_onnx, "--runtime", "ort-cuda" if not HAS_CUDA else "torch", "--iterations", 1, "--warmup", 0)
    assert "nothing could be measured" in result.stderr
    assert "unknown runtime" in cli.fails(2, "bench", half_width_onnx, "--runtime", "tensorflow").stderr
    assert "not a list of positive integers" in cli.fails(2, "bench", half_width_onnx, "--batch", "0").stderr


# ---------------------------------------------------------------- TensorRT lint

def _graph(nodes, inits, input_shape=("batch", 4), opset=18, value_info=()):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [numpy_helper.from_array(v, k) for k, v in inits.items()],
        value_info=list(value_info),
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


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


# ---------------------------------------------------------------- TensorRT engine logic without TensorRT

def test_batch_profile_rules():
    from alexnet_deploy.errors import InputError
    from alexnet_deploy.build.engine import BatchProfile

    assert BatchProfile(1, 8, 64).validated() == BatchProfile(1, 8, 64)
    assert BatchProfile().validated(fixed_batch=4) == BatchProfile(4, 4, 4)
    with pytest.raises(InputError, match="min <= opt <= max"):
        BatchProfile(8, 4, 64).validated()
    with pytest.raises(InputError, match="fixed batch of 4"):
        BatchProfile(1, 2, 8).validated(fixed_batch=4)


def test_engine_sidecar_compatibility(tmp_path):
    from alexnet_deploy.errors import InputError
    from alexnet_deploy.runtimes.tensorrt import EngineSidecar, check_compatible, read_sidecar, sidecar_path

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(InputError, match="no sidecar"):
        read_sidecar(engine)
    sidecar = EngineSidecar("10.13.0", "NVIDIA H100", "9.0", "int8", {"min": 1, "opt": 32, "max": 128}, "input", "logits", [3, 224, 224], ["a"], {"crop": 224})
    sidecar_path(engine).write_text(json.dumps(sidecar.to_dict()))
    assert read_sidecar(engine) == sidecar
    check_compatible(sidecar, "10.13.0", "9.0", "NVIDIA H100 NVL")  # same TensorRT, same GPU generation
    with pytest.raises(InputError, match="TensorRT 10.13.0; this machine has TensorRT 10.13.3"):
        check_compatible(sidecar, "10.13.3", "9.0")  # plans need the exact TensorRT version
    with pytest.raises(InputError, match="compute capability 9.0"):
        check_compatible(sidecar, "10.13.0", "8.9", "NVIDIA L4")
    sidecar_path(engine).write_text("{broken")
    with pytest.raises(InputError, match="damaged"):
        read_sidecar(engine)


def test_build_without_tensorrt_is_a_clean_error(cli, half_width_onnx, tmp_path):
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    result = cli.fails(4, "build", half_width_onnx, "-o", tmp_path / "m.engine")
    assert "tensorrt" in result.stderr and "pip install" in result.stderr
    assert not (tmp_path / "m.engine").exists()


class _RowSumRuntime:
    """A stand-in backend with a TensorRT-like profile (8..16): logits are each row's sum."""

    @staticmethod
    def make(min_batch, max_batch):
        from alexnet_deploy.runtimes.base import Runtime, RuntimeInfo

        class RowSum(Runtime):
            def _info_impl(self):
                return RuntimeInfo("fake", "cpu", "fp32", "input", (None, 3, 2, 2), min_batch, max_batch)

            def _run_impl(self, batch):
                assert min_batch <= len(batch) <= max_batch
                return batch.reshape(len(batch), -1).sum(axis=1, keepdims=True)

        return RowSum()


def test_run_all_pads_chunks_below_the_minimum_batch():
    data = np.random.default_rng(0).standard_normal((37, 3, 2, 2)).astype(np.float32)
    with _RowSumRuntime.make(8, 16) as runtime:
        got = runtime.run_all(data, batch_size=32)  # chunks of 16, 16, 5 (padded to 8)
    np.testing.assert_allclose(got[:, 0], data.reshape(37, -1).sum(axis=1), rtol=1e-6)


def test_write_section_replaces_only_the_section_with_that_exact_title(tmp_path):
    from alexnet_deploy.bench.report import write_section

    target = tmp_path / "BENCHMARKS.md"
    target.write_text("# Benchmarks\n\n## Runtime suite (alexnet bench --suite)\n\nold suite\n\n## Runtime\n\nold runtime\n\n## Notes\n\nmine\n")
    write_section(target, "## Runtime\n\nnew runtime\n")
    text = target.read_text()
    assert "old suite" in text and "mine" in text and "new runtime" in text and "old runtime" not in text
    write_section(target, "## Serving\n\nserved\n")
    assert target.read_text().endswith("## Serving\n\nserved\n") and "new runtime" in target.read_text()
