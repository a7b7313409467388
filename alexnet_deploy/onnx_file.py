"""Reading ONNX files with clear errors (torch-free)."""

from __future__ import annotations

from pathlib import Path

from alexnet_deploy.errors import InputError


def check_input_file(path: Path, what: str = "file") -> Path:
    """Return ``path`` if it is a readable, non-empty file; else raise InputError saying what is wrong."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} {path} does not exist.", "check the path")
    if path.is_dir():
        raise InputError(f"{what} {path} is a directory, not a file.", "give the path of the file itself")
    if path.stat().st_size == 0:
        raise InputError(f"{what} {path} is empty (0 bytes).", "re-create or re-download it")
    return path


def load_onnx(path: Path, load_weights: bool = True):
    """Load an ONNX ModelProto, raising InputError for missing, empty or corrupt files."""
    import onnx

    path = check_input_file(Path(path), "ONNX file")
    try:
        model = onnx.load(str(path), load_external_data=load_weights)
    except Exception as exc:  # protobuf's DecodeError and friends: the file is not ONNX
        raise InputError(
            f"{path} is not a readable ONNX model ({type(exc).__name__}: {str(exc)[:120]}).",
            "re-export it with `alexnet export`",
        ) from None
    if not model.graph.node and not model.graph.input:
        raise InputError(f"{path} is not a readable ONNX model (no graph found).", "re-export it with `alexnet export`")
    return model
