"""The OpenVINO runtime: the runtime contract, precision read back from the execution graph,
BF16 offered only where the CPU has it, thread safety, and every place a runtime is chosen
(predict, eval, verify, bench, Triton packaging). References are independent of the code
under test: a bare OpenVINO loop and a bare onnxruntime session on the same file."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from alexnet_deploy.errors import DependencyError, InputError

ov = pytest.importorskip("openvino", reason="openvino is not installed (pip install 'alexnet-deploy[openvino]')")

from alexnet_deploy.runtimes.cpu import bf16_problem  # noqa: E402

HAS_BF16 = bf16_problem(list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))) is None
needs_bf16 = pytest.mark.skipif(not HAS_BF16, reason="this CPU has no native BF16 (AVX-512 BF16 or AMX)")


def _bare_openvino(path, batch, precision="f32"):
    """OpenVINO's own API, nothing of ours: read, compile at the batch's shape, infer once."""
    core = ov.Core()
    model = core.read_model(str(path))
    model.reshape({model.inputs[0].get_any_name(): list(batch.shape)})
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision})
    return compiled.create_infer_request().infer({0: batch})[compiled.outputs[0]]


def _bare_ort(path, batch):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: batch})[0]


@pytest.fixture(scope="module")
def batch(half_width):
    size = half_width[2]
    return np.random.default_rng(3).standard_normal((3, 3, size, size), dtype=np.float32)


def test_fp32_runs_in_f32_and_equals_a_bare_openvino_loop(half_width_onnx, batch):
    from alexnet_deploy.runtimes.openvino import OpenVinoRuntime

    with OpenVinoRuntime(half_width_onnx, threads=1) as runtime:
        info = runtime.info()
        # FP32 means FP32, even on a BF16 CPU where OpenVINO's default would be bf16.
        assert info.precision == "fp32" and info.details["inference_precision_hint"] == "f32"
        assert set(info.details["runtime_precision"].values()) == {"f32"}
        assert {"Convolution", "FullyConnected"} <= set(info.details["runtime_precision"])
        for size in (1, 3, 2):  # each batch size gets its own static compile; results must not depend on it
            got = runtime.run(batch[:size])
            np.testing.assert_allclose(got, _bare_openvino(half_width_onnx, batch[:size]), rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(got, _bare_ort(half_width_onnx, batch[:size]), rtol=1e-4, atol=1e-4 * np.abs(got).max())


@needs_bf16
def test_bf16_reports_bf16_and_stays_close(half_width_onnx, batch):
    from alexnet_deploy.runtimes.openvino import OpenVinoRuntime

    with OpenVinoRuntime(half_width_onnx, precision="bf16", threads=1) as runtime:
        info = runtime.info()
        assert info.precision == "bf16" and info.details["inference_precision_hint"] == "bf16"
        assert "bf16" in info.details["runtime_precision"].values()
        got = runtime.run(batch)
    np.testing.assert_allclose(got, _bare_openvino(half_width_onnx, batch, "bf16"), rtol=1e-5, atol=1e-5)
    reference = _bare_ort(half_width_onnx, batch)
    cosine = (got * reference).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(reference, axis=1)
    assert cosine.min() > 0.999 and not np.array_equal(got, reference)  # bf16 really ran: close, not identical


def test_bf16_is_refused_on_a_cpu_without_it(half_width_onnx, monkeypatch):
    from alexnet_deploy.runtimes import cpu, open_runtime

    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"sse4_2", "avx2", "avx512f", "avx512_vnni"}))
    with pytest.raises(DependencyError) as caught:
        open_runtime(half_width_onnx, "openvino-bf16")
    assert "BF16" in caught.value.problem and "avx512_bf16" in caught.value.problem and "\n" not in caught.value.problem
    assert "--runtime openvino" in caught.value.fix
    # OpenVINO's own capability list is the second witness: both must offer BF16.
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    assert "OpenVINO does not offer BF16" in cpu.bf16_problem(["FP32", "INT8"])
    assert cpu.bf16_problem(["FP32", "BF16"]) is None


@pytest.mark.slow  # seconds each: a subprocess, a Ray instance or a full-size export
def test_bf16_only_from_the_fp32_file_and_names_checked(half_width_onnx, store, cli):
    from alexnet_deploy.runtimes import open_runtime

    fp16 = store / "half.fp16.onnx"
    if not fp16.exists():
        cli.ok("quantize", half_width_onnx, "-p", "fp16", "-o", fp16)
    with open_runtime(fp16, "openvino") as runtime:  # fp16 weights, computed in f32 on CPUs
        assert runtime.info().precision == "fp16" and runtime.info().details["inference_precision_hint"] == "f32"
    if HAS_BF16:
        with pytest.raises(InputError, match="FP32 file"):
            open_runtime(fp16, "openvino-bf16")
    with pytest.raises(InputError, match="unknown runtime"):
        open_runtime(half_width_onnx, "tensorflow")
    with pytest.raises(InputError, match="contradict"):
        open_runtime(half_width_onnx, "openvino-bf16", precision="fp32")


def test_missing_openvino_names_the_extra(half_width_onnx, monkeypatch):
    import sys

    from alexnet_deploy.runtimes.openvino import OpenVinoRuntime

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    with pytest.raises(DependencyError) as caught:
        OpenVinoRuntime(half_width_onnx)
    assert caught.value.fix == "pip install 'alexnet-deploy[openvino]'" and caught.value.exit_code == 4


def test_classifier_on_openvino_is_thread_safe(half_width_onnx):
    from alexnet_deploy import Classifier
    from alexnet_deploy.checkpoints.demo import make_sample_images
    import tempfile
    from pathlib import Path

    images = make_sample_images(Path(tempfile.mkdtemp()) / "ov_images", 6, seed=7)
    with Classifier(half_width_onnx, runtime="openvino", threads=1) as classifier, Classifier(half_width_onnx) as on_ort:
        assert classifier.runtime == "openvino" and classifier.precision == "fp32"
        jobs = [images[i:] + images[:i] for i in range(6)]
        serial = [classifier.logits(classifier.preprocess(job)) for job in jobs]
        for job, logits in zip(jobs, serial):
            np.testing.assert_allclose(logits, on_ort.logits(on_ort.preprocess(job)), rtol=1e-4, atol=1e-4 * np.abs(logits).max())
        results: list = [None] * 6
        barrier = threading.Barrier(6)

        def work(index):
            barrier.wait()
            for _ in range(3):
                results[index] = classifier.logits(classifier.preprocess(jobs[index]))

        threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for got, want in zip(results, serial):
            np.testing.assert_array_equal(got, want)


def test_predict_and_eval_agree_with_ort(cli, half_width_onnx, tmp_path):
    from PIL import Image

    from alexnet_deploy.checkpoints.demo import make_sample_images

    images = make_sample_images(tmp_path / "imgs", 6, seed=11)
    top1 = {}
    for runtime in ("ort", "openvino"):
        data = json.loads(cli.ok("predict", half_width_onnx, *images, "--runtime", runtime, "--json", "-").stdout)
        assert data["runtime"] == runtime and data["precision"] == "fp32"
        top1[runtime] = [item["top"][0][0] for item in data["predictions"]]
    assert top1["openvino"] == top1["ort"]
    folder = tmp_path / "data"
    for i, label in enumerate(("daisy", "roses")):
        (folder / label).mkdir(parents=True)
        for j, path in enumerate(images[i * 3:(i + 1) * 3]):
            Image.open(path).save(folder / label / f"{j}.png")
    reports = {rt: json.loads(cli.ok("eval", half_width_onnx, "--data", folder, "--runtime", rt, "--json", "-").stdout) for rt in ("ort", "openvino")}
    assert reports["openvino"]["runtime"] == "openvino" and reports["openvino"]["precision"] == "fp32"
    assert reports["openvino"]["confusion"] == reports["ort"]["confusion"] and reports["openvino"]["top1"] == reports["ort"]["top1"]


def test_verify_with_openvino(cli, half_width_onnx):
    data = json.loads(cli.ok("verify", half_width_onnx, "--reference", half_width_onnx, "--runtime", "openvino", "--json", "-").stdout)
    assert data["passed"] and data["precision"] == "fp32" and data["max_rel_err"] <= 1e-4
    if HAS_BF16:
        result = cli("verify", half_width_onnx, "--reference", half_width_onnx, "--runtime", "openvino-bf16", "--json", "-")
        data = json.loads(result.stdout)
        assert data["precision"] == "bf16" and data["thresholds"] == {"min_top1_agreement": 0.95, "min_cosine": 0.999}
        assert result.exit_code == (0 if data["passed"] else 1) and data["min_cosine"] > 0.999


def test_triton_openvino_config_parses(cli, half_width_onnx, tmp_path):
    from triton_config import parse

    cli.ok("package", half_width_onnx, "--triton", tmp_path, "--backend", "openvino", "--max-batch", 16)
    folder = tmp_path / "alexnet"
    config = parse(folder / "config.pbtxt")
    assert config.backend == "openvino" and config.platform == "" and config.default_model_filename == "model.onnx"
    assert (folder / "1" / "model.onnx").read_bytes() == half_width_onnx.read_bytes()
    assert config.max_batch_size == 16 and list(config.input[0].dims) == [3, 224, 224]
    assert {key: p.string_value for key, p in config.parameters.items()} == {"NUM_STREAMS": "1", "PERFORMANCE_HINT": "LATENCY"}
    kinds = type(config.instance_group[0]).Kind
    assert config.instance_group[0].kind == kinds.Value("KIND_CPU")
    cli.fails(2, "package", half_width_onnx, "--triton", tmp_path, "--backend", "tensorflow")


@pytest.mark.slow  # seconds each: a subprocess, a Ray instance or a full-size export
def test_bench_openvino_rows_host_and_fastest(cli, half_width_onnx):
    data = json.loads(cli.ok("bench", half_width_onnx, "--runtime", "ort,openvino", "--batch", "1,2", "--iterations", 2, "--rounds", 2, "--warmup", 0, "--threads", 1, "--json", "-").stdout)
    machine = data["machine"]
    assert data["settings"]["rounds"] == 2 and all(r["iterations"] == 2 for r in data["results"])  # one per round, round-robin
    assert set(machine["isa"]) == {"avx2", "avx512", "vnni", "bf16", "amx"} and "AVX2" in machine["isa_line"]
    assert {"fp32", "int8"} <= set(machine["ceilings"]) and ("bf16" in machine["ceilings"]) == HAS_BF16
    assert "openvino" in machine["versions"]
    rows = {(r["runtime"], r["batch"]): r for r in data["results"]}
    assert set(rows) == {("ort", 1), ("ort", 2), ("openvino", 1), ("openvino", 2)}
    assert rows["openvino", 1]["precision"] == "fp32" and set(rows["openvino", 1]["runtime_precision"].values()) == {"f32"}
    for row in rows.values():
        assert row["gflops"] > 0 and row["ceiling_pct"] == pytest.approx(100 * row["gflops"] / machine["ceilings"]["fp32"]["gflops"])
    for fastest in data["fastest"]:
        best = max((r for r in data["results"] if r["batch"] == fastest["batch"]), key=lambda r: r["throughput_ips"])
        assert (fastest["runtime"], fastest["throughput_ips"]) == (best["runtime"], best["throughput_ips"])
        assert fastest["speedup_vs_ort_fp32"] == pytest.approx(best["throughput_ips"] / rows["ort", fastest["batch"]]["throughput_ips"])
    assert [f["batch"] for f in data["fastest"]] == [1, 2]


def test_model_flops_counted_from_the_graph(half_width_onnx, half_width):
    """Against a hand count from the seed class's own layers (conv: 2*out*in/groups*k*k*H*W; linear: 2*in*out)."""
    import torch

    from alexnet_deploy.bench.host import model_flops

    _, model, size = half_width
    total, x = 0, torch.zeros(1, 3, size, size)
    hooks = []

    def count(module, inputs, output):
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            total += 2 * output.numel() * module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        elif isinstance(module, torch.nn.Linear):
            total += 2 * module.in_features * module.out_features

    for module in model.modules():
        hooks.append(module.register_forward_hook(count))
    with torch.no_grad():
        model.eval()(x)
    for hook in hooks:
        hook.remove()
    assert model_flops(str(half_width_onnx)) == pytest.approx(total)


def test_openvino_side_imports_without_torch(half_width_onnx):
    """Classifier on openvino stays torch-free, like the onnxruntime side."""
    from torch_free import run_without_torch

    code = (
        "import numpy as np\n"
        "from alexnet_deploy import Classifier\n"
        f"c = Classifier({str(half_width_onnx)!r}, runtime='openvino')\n"
        "print(c.logits(np.zeros((2, 3, 224, 224), np.float32)).shape, c.precision)\n"
    )
    assert run_without_torch(code) == "(2, 5) fp32"


def test_suite_plan_and_section_name_the_fastest(tmp_path):
    """The suite measures OpenVINO on every CPU file, BF16 on the FP32 file only, and its section ends with the host and the fastest lines."""

    from alexnet_deploy.bench.runner import BenchReport, fastest_per_batch
    from alexnet_deploy.bench.suite import SUITE_RUNTIMES, suite_excludes, suite_markdown

    assert {"openvino", "openvino-bf16"} <= set(SUITE_RUNTIMES)
    fp32 = tmp_path / "seed000.onnx"
    assert not suite_excludes("openvino", tmp_path / "seed000.int8.onnx", fp32) and not suite_excludes("openvino-bf16", fp32, fp32)
    assert suite_excludes("openvino-bf16", tmp_path / "seed000.int8.onnx", fp32) and suite_excludes("openvino", tmp_path / "seed000.int8-trt.onnx", fp32)

    def row(runtime, model, precision, batch, ips):
        lat = {k: 1000 * batch / ips for k in ("mean", "p50", "p90", "p99", "min", "max")}
        return {"runtime": runtime, "model": str(tmp_path / model), "precision": precision, "device": "cpu", "batch": batch, "io": "host",
                "latency_ms": lat, "throughput_ips": ips, "iterations": 3, "speedup": 1.0, "baseline": "ort seed000.onnx"}

    results = [row("ort", "seed000.onnx", "fp32", 1, 50.0), row("openvino", "seed000.int8.onnx", "int8", 1, 200.0),
               row("ort", "seed000.onnx", "fp32", 32, 90.0), row("openvino-bf16", "seed000.onnx", "bf16", 32, 180.0)]
    machine = {"cpu": "X", "cores": 2, "threads": 2, "gpu": None, "versions": {"openvino": "1"}, "date": "d",
               "isa_line": "AVX2 yes, AVX-512 yes, VNNI yes, BF16 yes, AMX no", "ceilings": {"fp32": {"gflops": 100.0, "how": "h"}}, "ceiling_ratios": {}}
    report = BenchReport(machine, results, settings={"warmup_s": 0, "duration_s": 1, "iterations": None, "io": "host", "rounds": 3}, harness={"overhead_ms_per_iteration": 1e-4, "overhead_pct_of_fastest_p50": 0.001})
    report.fastest = fastest_per_batch(results)
    text = suite_markdown(report)
    assert "ISA: AVX2 yes, AVX-512 yes, VNNI yes, BF16 yes, AMX no" in text and "3 rounds measured round-robin" in text
    assert "fastest at batch 1: openvino int8 (seed000.int8.onnx) 200.0 img/s, p50 5.00 ms, 4.00x onnxruntime FP32" in text
    assert "fastest at batch 32: openvino-bf16 bf16 (seed000.onnx) 180.0 img/s" in text and "2.00x onnxruntime FP32" in text


def test_serve_runs_the_model_in_openvino(half_width_onnx, batch):
    """`alexnet serve --runtime openvino`: the service's answers equal a bare OpenVINO loop (f32)."""
    from alexnet_deploy.serve import ModelService

    service = ModelService(half_width_onnx, "alexnet", 4, 1.0, runtime="openvino")
    try:
        assert service.runtime.info().runtime == "openvino" and service.runtime.info().precision == "fp32"
        body = json.dumps({"inputs": [{"name": "input", "shape": list(batch.shape), "datatype": "FP32", "data": batch.ravel().tolist()}]}).encode()
        response, _ = service.infer(body, None)
        logits = np.array(json.loads(response)["outputs"][0]["data"], np.float32).reshape(len(batch), -1)
    finally:
        service.close()
    np.testing.assert_allclose(logits, _bare_openvino(half_width_onnx, batch), rtol=1e-4, atol=1e-4)
