"""Reading ONNX files with clear errors (torch-free)."""

from __future__ import annotations

import os
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
    if not os.access(path, os.R_OK):
        raise InputError(f"{what} {path} is not readable (permission denied).", f"fix its permissions: chmod u+r {path}")
    return path


def _head(path: Path, n: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(n)
    except OSError:
        return b""


def looks_like_onnx(path: Path) -> bool:
    """True when the file starts like a serialized ModelProto (field 1, ir_version, as a varint)."""
    return _head(path, 1) == b"\x08"


def looks_like_safetensors(path: Path) -> bool:
    """True when the file starts like a safetensors file: a little-endian u64 header length, then '{'."""
    head = _head(path, 9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    try:
        return 8 + int.from_bytes(head[:8], "little") <= Path(path).stat().st_size
    except OSError:
        return False


def looks_like_checkpoint(path: Path) -> bool:
    """True for torch.save output (a zip archive since PyTorch 1.6, or a pickle of protocol 2-5) and safetensors files."""
    head = _head(path, 2)
    return head == b"PK" or (len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5) or looks_like_safetensors(path)


def load_onnx(path: Path, load_weights: bool = True):
    """Load an ONNX ModelProto, raising InputError for missing, empty or corrupt files."""
    import onnx

    path = check_input_file(Path(path), "ONNX file")
    try:
        model = onnx.load(str(path), load_external_data=load_weights)
    except Exception as exc:  # protobuf's DecodeError and friends: the file is not ONNX
        if looks_like_checkpoint(path):
            raise InputError(f"{path} is a PyTorch checkpoint, not an ONNX model.", "export it first: alexnet export " + str(path)) from None
        raise InputError(
            f"{path} is not a readable ONNX model ({type(exc).__name__}: {str(exc)[:120]}).",
            "re-export it with `alexnet export`",
        ) from None
    if not model.graph.node and not model.graph.input:
        raise InputError(f"{path} is not a readable ONNX model (no graph found).", "re-export it with `alexnet export`")
    return model


def load_onnx_bytes(data: bytes):
    """An ONNX ModelProto from a serialized file's bytes, raising InputError when they are not ONNX."""
    import onnx

    try:
        model = onnx.load_model_from_string(bytes(data))
    except Exception as exc:
        raise InputError(f"the model bytes are not a readable ONNX model ({type(exc).__name__}).", "pass the bytes of an .onnx file written by `alexnet export`") from None
    if not model.graph.node and not model.graph.input:
        raise InputError("the model bytes are not a readable ONNX model (no graph found).", "pass the bytes of an .onnx file written by `alexnet export`")
    return model


ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def file_kind(path: Path) -> str | None:
    """'engine', 'onnx' or 'checkpoint' for a model file (by suffix and first bytes), None if unknown."""
    path = Path(path)
    if path.suffix.lower() in ENGINE_SUFFIXES:
        return "engine"
    if looks_like_onnx(path) or (path.suffix.lower() == ".onnx" and not looks_like_checkpoint(path)):
        return "onnx"
    if looks_like_checkpoint(path) or path.suffix.lower() in (".pth", ".pt", ".safetensors"):
        return "checkpoint"
    return None


def fixed_batch(proto) -> int | None:
    """The ONNX model's fixed batch size, or None when its batch dimension is dynamic."""
    dim = proto.graph.input[0].type.tensor_type.shape.dim
    return int(dim[0].dim_value) if dim and dim[0].HasField("dim_value") else None


def check_model_name(name: str) -> str:
    """``name`` if it can be a folder name and a URL path segment as is; InputError otherwise."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,128}", name) or name in (".", ".."):
        raise InputError(f"model name {name!r} is not usable as a folder name or URL path segment.", "use up to 128 letters, digits, '_', '-' or '.', e.g. --name alexnet")
    return name
