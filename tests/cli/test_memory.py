"""The CLI keeps freed model-sized buffers (glibc), so the next copy of a 230 MB model is not faulted in again.

Observed in the kernel's own accounting, not with a clock: after a 256 MB buffer is written and
freed, the process's resident memory (``/proc/self/status``) drops back with glibc's defaults
(the block was unmapped, and the next one is faulted in afresh) and stays with
``keep_freed_memory`` (the next allocation reuses those pages).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from alexnet_deploy.cli import memory

PROBE = """
import json, sys
import numpy as np
if sys.argv[1] != "default":
    from alexnet_deploy.cli.memory import keep_freed_memory
    assert keep_freed_memory() is (sys.argv[1] == "tuned")
def resident_mb():
    line = next(l for l in open("/proc/self/status") if l.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024
before = resident_mb()
buffer = np.empty(256 << 20, dtype=np.uint8)
buffer[::4096] = 1  # touch every page
written = resident_mb()
del buffer
print(json.dumps({"written": written - before, "after_free": resident_mb() - before}))
"""


def _resident(mode: str, **env) -> dict:
    env_free = {k: v for k, v in __import__("os").environ.items() if not k.startswith("MALLOC_")}  # conftest tunes the suite's own processes
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, env={**env_free, **env}, check=True)
    return json.loads(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc and /proc: Linux only")
def test_a_freed_model_sized_buffer_stays_in_the_process():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip(f"not glibc ({platform.libc_ver()[0] or 'unknown C library'}): nothing to tune")
    default, tuned = _resident("default"), _resident("tuned")
    assert default["written"] >= 200 and tuned["written"] >= 200, (default, tuned)  # the 256 MB were resident
    assert default["after_free"] <= 50, default  # glibc's defaults: unmapped on free, faulted in again next time
    assert tuned["after_free"] >= 200, tuned  # kept for the next model-sized allocation
    # The user's own glibc variable wins: nothing changed, the memory is returned as glibc's defaults do.
    declined = _resident("declined", MALLOC_TRIM_THRESHOLD_="131072")
    assert declined["written"] >= 200 and declined["after_free"] <= 50, declined


def test_every_command_but_serve_is_tuned():
    assert memory.suits(["quickstart", "DIR"]) and memory.suits(["export", "--help"]) and memory.suits([])
    assert memory.command_of(["--version"]) is None and memory.command_of(["optimize", "m.pth"]) == "optimize"
    assert not memory.suits(["serve", "model.onnx", "--port", "8000"])


def test_the_entry_point_tunes_one_shot_commands_only(monkeypatch):
    import importlib

    app_module = importlib.import_module("alexnet_deploy.cli.app")  # the package's `app` attribute is the Typer app

    calls = []
    monkeypatch.setattr(memory, "keep_freed_memory", lambda: calls.append(True) or True)
    monkeypatch.setattr(app_module, "app", lambda args, prog_name: None)
    app_module.main(["inspect", "x.onnx"])
    assert calls == [True]
    app_module.main(["serve", "x.onnx"])
    assert calls == [True]  # serve gives memory back after a burst: glibc's defaults
