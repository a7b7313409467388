"""Run a snippet in a fresh interpreter where ``import torch`` fails: the runtime side's promise."""

from __future__ import annotations

import subprocess
import sys


def run_without_torch(code: str) -> str:
    """Run ``code`` with torch blocked from importing; assert it exits 0 and return its stdout, stripped."""
    result = subprocess.run([sys.executable, "-c", "import sys; sys.modules['torch'] = None\n" + code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()
