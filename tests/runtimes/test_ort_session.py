"""OrtRuntime's session: the providers and options it asks onnxruntime for, and each refusal's own words.

The session is onnxruntime's real one on a tiny onnx.helper model; what OrtRuntime asked for is
read off the arguments onnxruntime's constructor received (a recording wrapper around the real
class). The CUDA and TensorRT branches run on any host: onnxruntime is made to list the provider
(then its real session falls back to the CPU, which OrtRuntime must refuse) or not to list it.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnxruntime as ort
import pytest

from alexnet_deploy.errors import DependencyError, InputError, RuntimeFailure
from alexnet_deploy.runtimes import OrtRuntime
from tiny_model import SIZE, tiny_model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("ort-session") / "tiny.onnx")


@pytest.fixture
def sessions(monkeypatch):
    """Every (options, providers) onnxruntime.InferenceSession was given while the test ran."""
    made = []
    real = ort.InferenceSession

    def recording(source, options=None, providers=None, **kwargs):
        made.append((source, options, providers))
        return real(source, options, providers=providers, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", recording)
    return made


def test_cpu_session_asks_for_the_cpu_provider_quiet_logs_and_the_threads_given(model, sessions):
    runtime = OrtRuntime(model)
    (source, options, providers), = sessions
    assert source == str(model) and providers == ["CPUExecutionProvider"]
    assert options.log_severity_level == 3  # errors only: onnxruntime's warnings would interleave with the CLI's output
    assert options.intra_op_num_threads == 0  # onnxruntime's own default (one per core)
    info = runtime.info()
    assert info.device == "cpu" and info.details == {"providers": ["CPUExecutionProvider"], "model": "tiny.onnx"}
    OrtRuntime(model, threads=3)
    assert sessions[-1][1].intra_op_num_threads == 3
    OrtRuntime(model.read_bytes())
    assert isinstance(sessions[-1][0], bytes) and sessions[-1][2] == ["CPUExecutionProvider"]


def test_an_unknown_device_is_refused_naming_the_choices(model):
    with pytest.raises(InputError) as caught:
        OrtRuntime(model, device="gpu")
    assert (caught.value.problem, caught.value.fix) == ("unknown onnxruntime device 'gpu'.", "use one of cpu, cuda, tensorrt")


@pytest.mark.parametrize("device, provider", [("cuda", "CUDAExecutionProvider"), ("tensorrt", "TensorrtExecutionProvider")])
def test_a_gpu_device_without_its_provider_is_refused_before_a_session(model, sessions, monkeypatch, device, provider):
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(DependencyError) as caught:
        OrtRuntime(model, device=device)
    assert caught.value.problem == f"this onnxruntime has no {provider} (it offers CPUExecutionProvider); install onnxruntime-gpu instead of onnxruntime"
    assert caught.value.fix == "pip install onnxruntime-gpu (and an NVIDIA driver with CUDA)"
    assert sessions == []


@pytest.mark.parametrize("device, asked", [
    ("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"]),
    ("tensorrt", ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]),
])
def test_a_gpu_session_that_falls_back_to_the_cpu_is_refused(model, sessions, monkeypatch, device, asked):
    """onnxruntime lists the provider, but its session runs on the CPU (missing CUDA libraries): never a silent CPU run."""
    real_available = ort.get_available_providers()
    monkeypatch.setattr(ort, "get_available_providers", lambda: real_available + [asked[0]])
    if asked[0] in real_available:
        pytest.skip(f"{asked[0]} is really available here: the fallback cannot be provoked")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # onnxruntime's "not in available provider names"
        with pytest.raises(DependencyError) as caught:
            OrtRuntime(model, device=device)
    assert sessions[-1][2] == asked
    assert caught.value.problem == f"onnxruntime could not start {asked[0]} and fell back to CPUExecutionProvider (missing CUDA/cuDNN/TensorRT libraries?)."
    assert caught.value.fix == ("check `python -c 'import onnxruntime; onnxruntime.preload_dlls()'` and the CUDA/TensorRT library "
                                "versions onnxruntime-gpu needs")


def test_a_file_onnxruntime_cannot_load_or_run_is_named_in_the_refusal(model, tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a protobuf at all")
    for source, label in ((broken, "broken.onnx"), (broken.read_bytes(), "<memory>")):
        with pytest.raises(InputError) as caught:
            OrtRuntime(source)
        assert caught.value.problem.startswith(f"onnxruntime cannot load {label} (") and caught.value.problem.endswith(").")
        assert len(caught.value.problem) > len(f"onnxruntime cannot load {label} ().") + 10  # onnxruntime's own first line is in it
        assert caught.value.fix == "re-export it with `alexnet export`"
    runtime = OrtRuntime(model)
    assert runtime.run(np.zeros((2, 3, SIZE, SIZE), np.float32)).shape[0] == 2
    runtime.session = _FailingSession(runtime.session)
    with pytest.raises(RuntimeFailure) as caught:
        runtime.run(np.zeros((1, 3, SIZE, SIZE), np.float32))
    assert caught.value.problem == "onnxruntime failed to run tiny.onnx (kernel exploded)."
    assert caught.value.fix == "re-export it with `alexnet export`"


def test_the_callers_precision_names_and_the_outputs_asked_for(model):
    runtime = OrtRuntime(model, precision="int8")
    info = runtime.info()
    assert info.precision == "int8" and info.input_name == runtime.session.get_inputs()[0].name
    assert OrtRuntime(model).info().precision == "fp32"  # from the input's type when the caller names none
    batch = np.zeros((2, 3, SIZE, SIZE), np.float32)
    outputs = [o.name for o in runtime.session.get_outputs()]
    assert len(runtime.run_outputs(batch, None)) == len(outputs)
    assert len(runtime.run_outputs(batch, outputs[:1])) == 1


class _FailingSession:
    """A session that loads but cannot run (what damaged weights look like to onnxruntime)."""

    def __init__(self, real):
        self._real = real

    def run(self, names, feeds):
        raise RuntimeError("kernel exploded\nsecond line")

    def __getattr__(self, name):
        return getattr(self._real, name)


def test_a_fixed_batch_model_reports_its_batch_and_only_the_named_outputs_are_run(model, tmp_path):
    """A graph whose batch is fixed at 2 (as some exporters write) and which exposes an intermediate tensor as a second output."""
    import onnx
    from onnx import helper

    proto = onnx.load(str(model))
    for value in list(proto.graph.input) + list(proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 2
    hidden = proto.graph.node[0].output[0]
    proto.graph.output.append(helper.make_tensor_value_info(hidden, onnx.TensorProto.FLOAT, None))
    fixed = tmp_path / "fixed.onnx"
    onnx.save(proto, str(fixed))
    runtime = OrtRuntime(fixed)
    info = runtime.info()
    assert (info.input_shape[0], info.min_batch, info.max_batch) == (2, 2, 2)
    batch = np.zeros((2, 3, SIZE, SIZE), np.float32)
    assert len(runtime.run_outputs(batch, None)) == 2
    (only,) = runtime.run_outputs(batch, [hidden])
    assert only.shape[0] == 2 and only.ndim == 4  # the first node's feature map, not the logits
    assert runtime.run(batch).shape == (2, len(OrtRuntime(model).run(batch)[0]))  # run() gives the logits, the first output
