"""The names the documentation's Python section (docs/export.md) promises exist, and importing the packages never imports torch."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

API_DOC = Path(__file__).resolve().parents[2] / "docs" / "export.md"  # "What the ONNX file carries" lists the public names


def _public_table() -> dict[str, list[str]]:
    """package -> names, from the documentation's table of public names."""
    section = API_DOC.read_text().split("| package | public names |", 1)[1].split("\n\n", 1)[0]
    rows = {}
    for line in section.splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0].strip("`")] = re.findall(r"`([A-Za-z_]+)`", cells[1])
    return rows


def test_the_readme_lists_the_packages():
    table = _public_table()
    assert {"alexnet_deploy", "alexnet_deploy.checkpoints", "alexnet_deploy.exporter", "alexnet_deploy.quantize", "alexnet_deploy.runtimes"} <= set(table)
    assert all(names for names in table.values())


def test_every_public_name_in_the_readme_resolves_and_is_listed_in_all():
    for package, names in _public_table().items():
        module = importlib.import_module(package)
        for name in names:
            assert getattr(module, name) is not None, f"{package}.{name}"
            if hasattr(module, "__all__"):
                assert name in module.__all__, f"{package}.__all__ lacks {name}"


def test_importing_every_package_imports_no_torch():
    packages = sorted(_public_table())
    code = "import sys\n" + "".join(f"import {p}\n" for p in packages) + "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
