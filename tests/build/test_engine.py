"""TensorRT engine logic testable without TensorRT: batch profiles, sidecar compatibility, clean errors."""

from __future__ import annotations

import json

import pytest



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
