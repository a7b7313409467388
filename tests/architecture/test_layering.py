"""The package's layering, read from the source: imports run downward only, and the runtime side never needs torch.

Every ``import``/``from ... import`` in every module is collected with ``ast`` (including
imports inside functions, which run later but are still dependencies), so a lazy import
cannot hide an upward edge.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "alexnet_deploy"

# Lower numbers are lower floors; a module may import its own floor and anything below it.
LEVELS = {
    "_lazy": 0, "errors": 0, "fileio": 0, "progress": 0, "timing": 0, "onnx_file": 0, "parsing": 0, "imaging": 0,
    "record": 1,
    "labels": 2, "preprocess": 2, "datasets": 2, "image_stream": 2, "prediction_files": 2,
    "runtimes": 3,
    "classifier": 4,
    "predict": 5,
    "checkpoints": 6,
    "verify": 7,
    "exporter": 8,
    "quantize": 9, "build": 9, "evaluate": 9,
    "bench": 10,
    "optimize": 11, "serve": 11, "deploy": 11,
    "quickstart": 12,
    "cli": 13,
    "__main__": 14, "__init__": 14,
}

# The runtime side: what an app embedding a model file imports. None of it may import torch,
# torchvision or the export side, not even lazily.
RUNTIME_SIDE = ("record", "labels", "imaging", "preprocess", "image_stream", "prediction_files", "datasets", "runtimes.base", "runtimes.ort", "runtimes.openvino", "classifier", "predict", "serve", "deploy")
TORCH_SIDE = ("torch", "torchvision", "onnxscript", "alexnet_deploy.checkpoints", "alexnet_deploy.exporter")


def _modules() -> dict[str, Path]:
    return {".".join(path.relative_to(PACKAGE).with_suffix("").parts): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path) -> set[str]:
    """Fully qualified names of every module ``path`` imports (absolute imports; the package uses no relative ones)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path}: relative import"
            found.add(node.module)
            # `from alexnet_deploy import cli` imports the submodule alexnet_deploy.cli
            if node.module == "alexnet_deploy":
                found.update(
                    f"alexnet_deploy.{alias.name}" for alias in node.names
                    if (PACKAGE / f"{alias.name}.py").exists() or (PACKAGE / alias.name).is_dir()
                )
    return found


def _stage(module: str) -> str:
    """The floor a module belongs to: its top-level package or module name under alexnet_deploy."""
    return module.split(".")[0] if module else "__init__"


def _level(module: str) -> int:
    stage = _stage(module)
    assert stage in LEVELS, f"alexnet_deploy.{module} is not placed on a floor: add {stage!r} to LEVELS"
    return LEVELS[stage]


def _internal(name: str) -> str | None:
    if name == "alexnet_deploy":
        return ""
    if name.startswith("alexnet_deploy."):
        return name[len("alexnet_deploy."):]
    return None


def test_every_module_is_on_a_floor():
    for module in _modules():
        if module.endswith("__init__") and module != "__init__":
            module = module[: -len(".__init__")]
        _level(module)


def test_imports_run_downward_only():
    upward = []
    modules = _modules()
    for module, path in modules.items():
        importer = module[: -len(".__init__")] if module.endswith(".__init__") else module
        for name in _imports(path):
            target = _internal(name)
            if target is None or target == "":
                continue
            if _stage(target) == _stage(importer):
                continue
            if _level(target) > _level(importer):
                upward.append(f"alexnet_deploy.{importer} (floor {_level(importer)}) imports {name} (floor {_level(target)})")
    assert not upward, "upward imports:\n" + "\n".join(sorted(upward))


def test_runtime_side_never_imports_torch_or_the_export_side():
    offenders = []
    for module, path in _modules().items():
        if not any(module == side or module.startswith(side + ".") for side in RUNTIME_SIDE):
            continue
        for name in _imports(path):
            if any(name == bad or name.startswith(bad + ".") for bad in TORCH_SIDE):
                offenders.append(f"alexnet_deploy.{module} imports {name}")
    assert not offenders, "\n".join(sorted(offenders))


@pytest.mark.parametrize("edge", ["alexnet_deploy.exporter.workflow", "torch"])
def test_the_walk_sees_lazy_imports(tmp_path, edge):
    """The check cannot pass by accident: an import inside a function is found."""
    source = tmp_path / "m.py"
    source.write_text(f"def f():\n    import {edge}\n")
    assert edge in _imports(source)
