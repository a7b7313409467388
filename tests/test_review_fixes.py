"""What a hostile review of the lock, the Ray staging folder, the demo checkpoints and the
FP32 switch on CUDA found, each pinned by a test that fails on the code before the fix."""

from __future__ import annotations

import hashlib
import os
import stat
import threading

import pytest
import torch

from alexnet_deploy.errors import InputError


def test_a_lock_file_hard_linked_to_another_file_is_refused_and_that_file_kept(tmp_path):
    """O_NOFOLLOW stops symbolic links only: emptying a planted hard link emptied its twin."""
    from alexnet_deploy.fileio import FolderLock

    victim = tmp_path / "victim.txt"
    victim.write_text("precious data")
    out = tmp_path / "out"
    out.mkdir()
    os.link(victim, out / ".lock")
    with pytest.raises(InputError, match="hard link"):
        with FolderLock(out, ".lock"):
            pass
    assert victim.read_text() == "precious data"


def test_the_ray_output_folder_gets_the_mode_a_mkdir_would_give(tmp_path):
    """mkdtemp makes the staging folder 0700; renamed into place it became the user's DIR."""
    from alexnet_deploy.deploy.ray_batch import _stage_folder

    umask = os.umask(0o022)
    try:
        staging = _stage_folder(tmp_path / "predictions")
        expected = tmp_path / "plain"
        expected.mkdir()  # what the same umask gives a folder
        assert stat.S_IMODE(staging.stat().st_mode) == stat.S_IMODE(expected.stat().st_mode) == 0o755
    finally:
        os.umask(umask)


def test_the_same_weights_save_to_the_same_bytes(tmp_path):
    """torch.save names the archive's folder after the file it writes: through a temporary name
    every save differed, and optimize's content-keyed stages never resumed after quickstart --force."""
    from alexnet_deploy.checkpoints.demo import make_demo_checkpoint
    from alexnet_deploy.checkpoints.demo_shapes import save_trained

    digest = lambda path: hashlib.sha256(path.read_bytes()).hexdigest()  # noqa: E731
    assert digest(make_demo_checkpoint(tmp_path / "a.pth")) == digest(make_demo_checkpoint(tmp_path / "b.pth"))
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    assert digest(save_trained(model, tmp_path / "c.pth")) == digest(save_trained(model, tmp_path / "d.pth"))
    assert torch.load(tmp_path / "c.pth", weights_only=True)["model_state_dict"]["0.weight"].equal(model[0].weight.detach())


@pytest.mark.skipif(not hasattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision"), reason="this torch has no fp32_precision settings")
def test_ieee_fp32_uses_the_precision_settings_and_restores_them(monkeypatch):
    """Reading the old allow_tf32 flags raises once a process set the new settings differently for
    convolutions and RNNs; the switch must not read them, and must restore what it changed."""
    from alexnet_deploy.runtimes.torch_runtime import _ieee_fp32

    conv, rnn, matmul = torch.backends.cudnn.conv, torch.backends.cudnn.rnn, torch.backends.cuda.matmul
    before = conv.fp32_precision, rnn.fp32_precision, matmul.fp32_precision
    try:
        conv.fp32_precision, rnn.fp32_precision = "tf32", "ieee"  # a user's own choice, mixed
        with _ieee_fp32(torch, True):
            assert conv.fp32_precision == "ieee" and matmul.fp32_precision == "ieee"
        assert (conv.fp32_precision, rnn.fp32_precision) == ("tf32", "ieee")
        with pytest.raises(ZeroDivisionError):  # restored on errors too
            with _ieee_fp32(torch, True):
                1 / 0
        assert conv.fp32_precision == "tf32"
    finally:
        conv.fp32_precision, rnn.fp32_precision, matmul.fp32_precision = before


def test_ieee_fp32_from_two_threads_never_restores_the_other_threads_setting():
    """Two overlapping runs used to restore each other's settings: TF32 came back on while one ran."""
    from alexnet_deploy.runtimes.torch_runtime import _ieee_fp32

    conv = getattr(torch.backends.cudnn, "conv", None)
    read = (lambda: conv.fp32_precision) if conv is not None and hasattr(conv, "fp32_precision") else (lambda: torch.backends.cudnn.allow_tf32)
    inside_first, release_first = threading.Event(), threading.Event()
    seen = []

    def first():
        with _ieee_fp32(torch, True):
            inside_first.set()
            release_first.wait(5)
            seen.append(read())

    def second():
        inside_first.wait(5)
        with _ieee_fp32(torch, True):  # waits for the first to finish
            seen.append(read())

    before = read()
    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    inside_first.wait(5)
    release_first.set()
    for thread in threads:
        thread.join(10)
    ieee = "ieee" if isinstance(before, str) else False
    assert seen == [ieee, ieee] and read() == before
