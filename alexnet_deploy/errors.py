"""The toolkit's error types: one per kind of failure, each with its exit code.

Library code raises these with a message that names the problem and the fix; the CLI
prints the message on one or two lines and exits with ``exit_code`` (2 for bad input or
usage, 1 for a check that ran and failed, 4 for a runtime or environment failure: a
missing package or device, a runtime that failed while running a model). Anything else
escaping is a bug: the CLI says "internal error" and exits 3 (with ``--debug``, the
traceback and still exit 3).
"""

from __future__ import annotations


class AlexnetError(Exception):
    """Base class: a user-facing failure with a readable message and an exit code."""

    exit_code = 2

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(problem if not fix else f"{problem}\n  fix: {fix}")


class InputError(AlexnetError):
    """A path, file or option the user gave cannot be used as it is."""


class CheckpointError(InputError):
    """A checkpoint file cannot be read, or does not hold what was expected."""


class LayoutError(InputError):
    """A state_dict does not determine one network: unknown, ambiguous or mismatched."""


class ModelFileError(InputError):
    """A ``--model FILE.py:Class`` cannot be imported or constructed."""


class ExportError(InputError):
    """PyTorch could not turn the model into a valid ONNX graph."""


class EnvironmentFailure(AlexnetError):
    """Not the user's input: this machine or a runtime could not do the work (exit 4)."""

    exit_code = 4


class DependencyError(EnvironmentFailure):
    """An optional package or device this feature needs is not available here."""


class RuntimeFailure(EnvironmentFailure):
    """A runtime (onnxruntime, torch, TensorRT) failed while running a model it had loaded."""


class CheckFailed(AlexnetError):
    """A check ran and its result failed its criteria (verify mismatch, accuracy drop)."""

    exit_code = 1


def require(module: str, extra: str, feature: str):
    """Import ``module`` or raise DependencyError naming the extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise DependencyError(
            f"{feature} needs the '{module}' package, which is not installed ({exc}).",
            f"pip install 'alexnet-deploy[{extra}]'",
        ) from None


# Optional packages and the extra that installs each (pyproject.toml's optional-dependencies).
EXTRA_OF = {
    "torch": "torch", "torchvision": "torch", "onnxscript": "torch", "openvino": "openvino", "ray": "ray",
    "pyarrow": "parquet", "tensorrt": "tensorrt", "safetensors": "safetensors",
}


def missing_dependency(exc: ImportError) -> DependencyError | None:
    """The DependencyError (with its install line) for an ImportError of an optional package, else None.

    The CLI maps what a lazy import deep inside a command raises, so a torch-less install asked
    to export says how to install torch (exit 4) instead of "internal error" (exit 3).
    """
    name = (getattr(exc, "name", None) or "").split(".")[0]
    if name not in EXTRA_OF:
        return None
    return DependencyError(f"this needs the '{name}' package, which is not installed.", f"pip install 'alexnet-deploy[{EXTRA_OF[name]}]'")
