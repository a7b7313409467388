"""Hand-built pickle opcodes and checkpoint archives for the hostile-file tests (tests only).

Payloads are assembled byte by byte so that no pickler of ours decides what the file holds.
"""

from __future__ import annotations

import io
import zipfile


def text(value: str) -> bytes:
    """BINUNICODE."""
    data = value.encode()
    return b"X" + len(data).to_bytes(4, "little") + data


def global_(module: str, name: str) -> bytes:
    """GLOBAL module.name."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def long1(n: int) -> bytes:
    """LONG1."""
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def zip_with_data_pkl(data_pkl: bytes) -> bytes:
    """A real torch.save archive whose data.pkl is replaced by ``data_pkl``."""
    import torch

    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buffer)
    source = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for info in source.infolist():
            archive.writestr(info.filename, data_pkl if info.filename.endswith("/data.pkl") else source.read(info))
    return out.getvalue()
