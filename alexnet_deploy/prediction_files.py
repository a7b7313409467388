"""Prediction rows in one file, Parquet or JSON Lines: what ``predict -o`` and ``predict --ray -o`` write.

A row is ``path``, ``labels`` (best first), ``probabilities`` (the same order) and ``error``
(empty, or why the image was skipped: such a row has no labels). Parquet needs pyarrow
(``pip install 'alexnet-deploy[parquet]'``); JSON Lines needs nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, BinaryIO

from alexnet_deploy.errors import InputError, require

FORMATS = {".parquet": "parquet", ".jsonl": "jsonl", ".json": "jsonl"}
COLUMNS = ("path", "labels", "probabilities", "error")


def file_format(path: Path | str) -> str:
    """'parquet' or 'jsonl' from the file name's suffix; InputError for any other suffix."""
    suffix = Path(str(path)).suffix.lower()
    if suffix not in FORMATS:
        raise InputError(f"--output {path}: {suffix or 'no suffix'} is not a predictions format.", "name the file *.parquet or *.jsonl")
    return FORMATS[suffix]


def require_format(fmt: str, feature: str = "predict -o FILE.parquet") -> None:
    """DependencyError (with the install line) when ``fmt`` needs a package that is missing."""
    if fmt == "parquet":
        require("pyarrow", "parquet", feature)


def text_path(path) -> str:
    """A file name as valid text: bytes that are not UTF-8 (allowed in Linux names) as \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def row(path, top: list[tuple[str, float]] | None, error: str = "") -> dict[str, Any]:
    """One prediction row (``top`` None or empty for a skipped image)."""
    top = top or []
    return {"path": text_path(path), "labels": [label for label, _ in top], "probabilities": [float(p) for _, p in top], "error": error}


class RowWriter:
    """Appends rows (dicts or pyarrow tables with COLUMNS) to an open binary file; ``close()`` finishes it."""

    def __init__(self, handle: BinaryIO, fmt: str):
        self.handle, self.fmt = handle, fmt
        self._parquet = None
        self.rows = 0

    def write_rows(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        if self.fmt == "jsonl":
            self.handle.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode())
            self.rows += len(rows)
            return
        import pyarrow as pa

        self.write_table(pa.table({
            "path": pa.array([r["path"] for r in rows], pa.string()),
            "labels": pa.array([r["labels"] for r in rows], pa.list_(pa.string())),
            "probabilities": pa.array([r["probabilities"] for r in rows], pa.list_(pa.float64())),
            "error": pa.array([r["error"] for r in rows], pa.string()),
        }))

    def write_table(self, table) -> None:
        if self.fmt == "jsonl":
            self.write_rows(table.select(list(COLUMNS)).to_pylist())
            return
        import pyarrow.parquet as pq

        table = table.select(list(COLUMNS))
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self.handle, table.schema)
        self._parquet.write_table(table)
        self.rows += table.num_rows

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
            self._parquet = None
