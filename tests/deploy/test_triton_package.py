"""`alexnet package --triton`: the repository layout, and config.pbtxt parsed by Triton's own ModelConfig protobuf."""

from __future__ import annotations

import json
import os
import signal

import pytest

from triton_config import model_config_class, parse  # noqa: F401  (tests/triton_config.py)


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

    import alexnet_deploy.deploy.triton as triton

    monkeypatch.setattr(triton, "_exchange", lambda a, b: False, raising=False)  # the two-rename fallback
    monkeypatch.setattr(os, "replace", replace_failing_second)
    assert "cannot write" in cli.fails(2, "package", half_width_onnx, "--triton", tmp_path / "repo", "--force").stderr
    monkeypatch.undo()
    assert (tmp_path / "repo" / "alexnet" / "config.pbtxt").read_text() == before
    assert (tmp_path / "repo" / "alexnet" / "1" / "model.onnx").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".repo-")]


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2-exchange", "two-renames"])
def test_force_over_a_symlinked_entry_replaces_the_link_and_leaves_its_folder(cli, half_width_onnx, tmp_path, monkeypatch, exchange):
    import alexnet_deploy.deploy.triton as triton

    if not exchange:
        monkeypatch.setattr(triton, "_exchange", lambda a, b: False)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "1").mkdir(parents=True)
    (elsewhere / "config.pbtxt").write_text("the user's own entry")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "alexnet").symlink_to(elsewhere, target_is_directory=True)
    (repo / "dangling").symlink_to(tmp_path / "gone")
    cli.ok("package", half_width_onnx, "--triton", repo, "--force")
    cli.ok("package", half_width_onnx, "--triton", repo, "--name", "dangling", "--force")
    for name in ("alexnet", "dangling"):
        assert not (repo / name).is_symlink() and (repo / name / "1" / "model.onnx").is_file()
    assert (elsewhere / "config.pbtxt").read_text() == "the user's own entry"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "repo"]  # no staging or old entry left behind
    assert sorted(p.name for p in repo.iterdir()) == ["alexnet", "dangling"]


def _engine_without_sidecar(tmp_path):
    path = tmp_path / "lonely.engine"
    path.write_bytes(b"x")
    return path


def test_unwritable_repository_is_a_clean_error(cli, half_width_onnx, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = cli.fails(2, "package", half_width_onnx, "--triton", blocker / "repo")
    assert "cannot write the model repository" in result.stderr


def _entry(repo):
    """(config text, model bytes, labels text) of repo/alexnet; asserts the entry is complete."""
    folder = repo / "alexnet"
    assert folder.is_dir(), f"{folder} is missing: the repository has no model"
    return (folder / "config.pbtxt").read_text(), (folder / "1" / "model.onnx").read_bytes(), (folder / "labels.txt").read_text()


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2-exchange", "two-renames"])
def test_force_replace_interrupted_at_every_step_keeps_a_whole_model(half_width_onnx, tmp_path, monkeypatch, exchange):
    """Ctrl-C before or after any filesystem step of `package --force`: old or new model, never none; a retry works."""
    import shutil

    import alexnet_deploy.deploy.triton as triton
    from alexnet_deploy.deploy.triton import package_triton

    if not exchange:
        monkeypatch.setattr(triton, "_exchange", lambda a, b: False, raising=False)
    steps = [(os, "replace"), (shutil, "rmtree"), (triton, "_exchange")]
    real = {name: getattr(owner, name, None) for owner, name in steps}

    def run(repo, interrupt_at):
        """package --force with a KeyboardInterrupt at step ``interrupt_at`` (even: before it, odd: after it)."""
        calls = []

        def spy(name):
            def step(*args, **kwargs):
                calls.append(name)
                if len(calls) * 2 - 2 == interrupt_at:
                    raise KeyboardInterrupt
                result = real[name](*args, **kwargs)
                if len(calls) * 2 - 1 == interrupt_at:
                    raise KeyboardInterrupt
                return result
            return step

        for owner, name in steps:
            if real[name] is not None:
                monkeypatch.setattr(owner, name, spy(name))
        try:
            package_triton(half_width_onnx, repo, max_batch=16, force=True)
        finally:
            for owner, name in steps:
                if real[name] is not None:
                    monkeypatch.setattr(owner, name, real[name])
        return calls

    template = tmp_path / "template"
    package_triton(half_width_onnx, template, max_batch=8)
    old = _entry(template)
    new_repo = tmp_path / "new"
    package_triton(half_width_onnx, new_repo, max_batch=16)
    new = _entry(new_repo)
    assert old != new
    total = len(run(shutil.copytree(template, tmp_path / "count"), interrupt_at=-1))  # an uninterrupted run
    assert total >= 1
    for point in range(2 * total):
        repo = shutil.copytree(template, tmp_path / f"r{point}")
        with pytest.raises(KeyboardInterrupt):
            run(repo, point)
        assert _entry(repo) in (old, new), f"interrupted at {point}: a mixed model"
        if hasattr(signal, "pthread_sigmask"):  # Ctrl-C/SIGTERM held off during the renames are let through again
            assert not {signal.SIGINT, signal.SIGTERM} & signal.pthread_sigmask(signal.SIG_BLOCK, set()), f"interrupted at {point}: signals left blocked"
        package_triton(half_width_onnx, repo, max_batch=16, force=True)  # the retry
        assert _entry(repo) == new


def test_exchange_is_used_on_linux(half_width_onnx, tmp_path, monkeypatch):
    """Where renameat2 works here, --force swaps in one step: no moment without a model."""
    import sys

    import alexnet_deploy.deploy.triton as triton
    from alexnet_deploy.deploy.triton import package_triton

    if not sys.platform.startswith("linux"):
        pytest.skip("renameat2 is Linux-only")
    probe_a, probe_b = tmp_path / "a", tmp_path / "b"
    probe_a.mkdir(), probe_b.write_text("b")
    if not triton._exchange(probe_a, probe_b):
        pytest.skip("this filesystem or kernel has no RENAME_EXCHANGE")
    assert probe_a.read_text() == "b" and probe_b.is_dir()
    package_triton(half_width_onnx, tmp_path / "repo", max_batch=8)
    real_replace = os.replace

    def no_plain_rename_of_the_entry(src, dst):
        assert os.path.basename(dst) != "alexnet", "the old entry was moved aside: a moment without a model"
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", no_plain_rename_of_the_entry)
    package_triton(half_width_onnx, tmp_path / "repo", max_batch=16, force=True)
    monkeypatch.undo()
    assert "max_batch_size: 16" in _entry(tmp_path / "repo")[0]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".repo-")]


def _relabelled_onnx(source, target, labels):
    import onnx

    model = onnx.load(str(source))
    for prop in model.metadata_props:
        if prop.key.endswith("labels"):
            prop.value = json.dumps(labels)
    onnx.save(model, str(target))
    return target


@pytest.mark.parametrize("bad", ["dande\nlion", "dande\rlion", "", " "], ids=["newline", "carriage-return", "empty", "blank"])
def test_package_refuses_labels_that_would_break_labels_txt(cli, half_width_onnx, tmp_path, bad):
    edited = _relabelled_onnx(half_width_onnx, tmp_path / "edited.onnx", ["daisy", bad, "roses", "sunflowers", "tulips"])
    result = cli.fails(2, "package", edited, "--triton", tmp_path / "repo")
    assert "label 1" in result.stderr and result.stderr.count("error:") == 1
    assert not (tmp_path / "repo" / "alexnet").exists()


def test_package_refuses_engine_sidecar_labels_with_a_line_break(cli, tmp_path):
    from alexnet_deploy.runtimes.tensorrt import EngineSidecar, sidecar_path

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan bytes")
    sidecar = EngineSidecar("10.13.0", "NVIDIA H100", "9.0", "fp32", {"min": 1, "opt": 16, "max": 32}, "input", "logits", [3, 227, 227], ["cat", "d\nog"], {})
    sidecar_path(engine).write_text(json.dumps(sidecar.to_dict()))
    assert "line break" in cli.fails(2, "package", engine, "--triton", tmp_path / "repo").stderr
    assert not (tmp_path / "repo" / "alexnet").exists()
