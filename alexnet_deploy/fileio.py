"""Safe output files: checked before heavy work, written atomically after it."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable

from alexnet_deploy.errors import InputError


def check_writable(path: Path, what: str = "output") -> Path:
    """Fail early, with a clear message, if ``path`` cannot be written as a file."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{what} path {path} is a directory.", "give a file name, e.g. -o model.onnx")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise InputError(f"{what} directory {parent} does not exist.", f"create it first: mkdir -p {parent}")
    if not os.access(parent, os.W_OK):
        raise InputError(f"{what} directory {parent} is not writable.", "choose another -o path")
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(f"{what} file {path} exists and is not writable.", "choose another -o path")
    return path


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Create ``path`` through ``write(tmp_path)``: either the whole new file appears or nothing changes.

    ``write`` gets a temporary path in the same directory; if it raises, the temporary
    file is removed and an existing ``path`` is left untouched.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
