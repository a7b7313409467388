"""`alexnet package --triton`: the repository layout, and config.pbtxt parsed by Triton's own ModelConfig protobuf."""

from __future__ import annotations

import functools
import importlib.util
import json
import os

import pytest


@functools.lru_cache(maxsize=None)
def _model_config_module():  # loaded once per session
    tritonclient = pytest.importorskip("tritonclient")
    path = os.path.join(os.path.dirname(tritonclient.__file__), "grpc", "model_config_pb2.py")
    spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def model_config_class():
    """tritonclient's generated ModelConfig (loaded from its file: the grpc package itself needs grpcio)."""
    return _model_config_module().ModelConfig


def parse(path):
    from google.protobuf import text_format

    return text_format.Parse(path.read_text(), model_config_class()())  # strict: unknown fields fail


def test_onnx_repository(cli, half_width_onnx, tmp_path):
    repo = tmp_path / "repo"
    cli.ok("package", half_width_onnx, "--triton", repo, "--max-batch", 32, "--instances", 2)
    folder = repo / "alexnet"
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == ["1", "1/model.onnx", "config.pbtxt", "labels.txt"]
    assert (folder / "1" / "model.onnx").read_bytes() == half_width_onnx.read_bytes()
    config = parse(folder / "config.pbtxt")
    assert config.name == "alexnet" and config.backend == "onnxruntime" and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 32
    assert list(config.input[0].dims) == [3, 224, 224] and config.input[0].name == "input"
    assert list(config.output[0].dims) == [5] and config.output[0].label_filename == "labels.txt"
    assert config.HasField("dynamic_batching") and config.instance_group[0].count == 2
    assert (folder / "labels.txt").read_text().split() == ["daisy", "dandelion", "roses", "sunflowers", "tulips"]


def test_type_enum_is_fp32(cli, half_width_onnx, tmp_path):
    model_config = model_config_class()
    cli.ok("package", half_width_onnx, "--triton", tmp_path, "--no-dynamic-batching")
    config = parse(tmp_path / "alexnet" / "config.pbtxt")
    fp32 = model_config.DESCRIPTOR.fields_by_name["input"].message_type.fields_by_name["data_type"].enum_type.values_by_name["TYPE_FP32"].number
    assert config.input[0].data_type == fp32 and config.output[0].data_type == fp32
    assert not config.HasField("dynamic_batching") and config.max_batch_size == 64


def test_engine_repository_respects_the_profile(cli, tmp_path):
    from alexnet_deploy.runtimes.tensorrt import EngineSidecar, sidecar_path

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan bytes")
    sidecar = EngineSidecar("10.13.0", "NVIDIA H100", "9.0", "int8", {"min": 1, "opt": 16, "max": 32}, "input", "logits", [3, 227, 227], ["cat", "dog"], {})
    sidecar_path(engine).write_text(json.dumps(sidecar.to_dict()))
    data = json.loads(cli.ok("package", engine, "--triton", tmp_path / "repo", "--name", "alexnet_trt", "--json").stdout)
    config = parse(tmp_path / "repo" / "alexnet_trt" / "config.pbtxt")
    assert config.platform == "tensorrt_plan" and config.max_batch_size == 32 == data["max_batch_size"]  # capped at the profile
    assert list(config.input[0].dims) == [3, 227, 227] and list(config.output[0].dims) == [2]
    assert (tmp_path / "repo" / "alexnet_trt" / "1" / "model.plan").read_bytes() == b"plan bytes"
    assert "exceeds the engine's profile" in cli.fails(2, "package", engine, "--triton", tmp_path / "r2", "--max-batch", 64).stderr


def test_fixed_batch_onnx_and_bad_input(cli, half_width, half_width_onnx, tmp_path):
    fixed = tmp_path / "fixed2.onnx"
    cli.ok("export", half_width[0], "-o", fixed, "--batch", 2, "--no-verify")
    cli.ok("package", fixed, "--triton", tmp_path / "repo")
    config = parse(tmp_path / "repo" / "alexnet" / "config.pbtxt")
    assert config.max_batch_size == 0 and list(config.input[0].dims) == [2, 3, 224, 224]
    assert "already exists" in cli.fails(2, "package", half_width_onnx, "--triton", tmp_path / "repo").stderr
    assert parse(tmp_path / "repo" / "alexnet" / "config.pbtxt").max_batch_size == 0  # untouched
    cli.ok("package", half_width_onnx, "--triton", tmp_path / "repo", "--force")
    assert parse(tmp_path / "repo" / "alexnet" / "config.pbtxt").max_batch_size == 64
    assert "not usable as a folder name" in cli.fails(2, "package", half_width_onnx, "--triton", tmp_path / "r", "--name", "../x").stderr
    assert "no sidecar" in cli.fails(2, "package", _engine_without_sidecar(tmp_path), "--triton", tmp_path / "r").stderr
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".repo-")]  # staging and the replaced entry are gone


def test_a_failed_force_replace_keeps_the_old_model(cli, half_width_onnx, tmp_path, monkeypatch):
    import os

    cli.ok("package", half_width_onnx, "--triton", tmp_path / "repo", "--max-batch", 8)
    before = (tmp_path / "repo" / "alexnet" / "config.pbtxt").read_text()
    real_replace, calls = os.replace, []

    def replace_failing_second(src, dst):  # 1: old entry aside, 2: staging into place (fails)
        calls.append(src)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_failing_second)
    assert "cannot write" in cli.fails(2, "package", half_width_onnx, "--triton", tmp_path / "repo", "--force").stderr
    monkeypatch.undo()
    assert (tmp_path / "repo" / "alexnet" / "config.pbtxt").read_text() == before
    assert (tmp_path / "repo" / "alexnet" / "1" / "model.onnx").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".repo-")]


def _engine_without_sidecar(tmp_path):
    path = tmp_path / "lonely.engine"
    path.write_bytes(b"x")
    return path


def test_unwritable_repository_is_a_clean_error(cli, half_width_onnx, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = cli.fails(2, "package", half_width_onnx, "--triton", blocker / "repo")
    assert "cannot write the model repository" in result.stderr
