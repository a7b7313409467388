"""A run killed with SIGKILL leaves temporaries (a half-written model of hundreds of MB, a
quantization work folder); the next run of the same kind removes them, and never a live run's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


WRITER = r'''
import sys, time
from pathlib import Path
from alexnet_deploy.fileio import atomic_write, scratch_dir

def write(tmp):
    tmp.write_bytes(b"x" * 1_000_000)
    print("writing", flush=True)
    time.sleep(600)

if sys.argv[1] == "file":
    atomic_write(Path(sys.argv[2]), write)
else:
    with scratch_dir("alexnet-quantize-") as work:
        (Path(work) / "big.onnx").write_bytes(b"x" * 1_000_000)
        print("writing", flush=True)
        time.sleep(600)
'''


def _killed(kind: str, target: Path, env: dict) -> None:
    """Start a writer, wait until it is mid-write, SIGKILL it (no cleanup handler can run)."""
    process = subprocess.Popen([sys.executable, "-c", WRITER, kind, str(target)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout.readline().strip() == "writing"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)


def test_the_next_run_removes_what_a_killed_one_left(tmp_path, monkeypatch):
    import tempfile

    from alexnet_deploy.fileio import atomic_write, scratch_dir

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = dict(os.environ, TMPDIR=str(scratch))
    out = tmp_path / "model.onnx"
    out.write_bytes(b"the good model")
    _killed("file", out, env)
    _killed("scratch", out, env)
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".model.onnx.")) + sorted(p.name for p in scratch.iterdir())
    assert len(left) == 2 and out.read_bytes() == b"the good model"  # what SIGKILL leaves, the old file intact
    # A live process's temporaries (this one's) are never touched.
    live = tmp_path / f".model.onnx.{os.getpid()}-live.tmp"
    live.write_bytes(b"in progress")
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    atomic_write(out, lambda tmp: tmp.write_bytes(b"the new model"))
    with scratch_dir("alexnet-quantize-") as work:
        assert Path(work).parent == scratch
        assert [p.name for p in scratch.iterdir()] == [Path(work).name]  # the killed run's folder is gone
    assert out.read_bytes() == b"the new model" and live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "model.onnx", "tmp"])
