"""Class labels from the files tutorials leave behind (torch-free)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from alexnet_deploy.errors import InputError
from alexnet_deploy.record import check_labels


def read_labels(source: Path) -> list[str]:
    """Labels, index order, from a ``class_indices.json``, a ``labels.txt`` or an ImageFolder root.

    - JSON: ``{"0": "daisy", ...}`` (index -> name, seed 003), ``{"daisy": 0, ...}``
      (torchvision's ``class_to_idx``) or a list of names.
    - Text: one label per line, blank lines ignored.
    - Directory: sorted class sub-folder names, as ``torchvision.datasets.ImageFolder`` does.
    """
    path = Path(source)
    if not path.exists():
        raise InputError(f"labels source {path} does not exist.", "give a class_indices.json, a labels.txt or an ImageFolder root")
    if path.is_dir():
        # Exactly torchvision.datasets.ImageFolder's rule (hidden folders included), so indices match training.
        classes = sorted(entry.name for entry in path.iterdir() if entry.is_dir())
        if not classes:
            raise InputError(f"{path} has no class sub-folders, so it is not an ImageFolder root.", "give the folder that holds one sub-folder per class")
        return check_labels(classes, f"folder {path}", "rename that class sub-folder")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (UnicodeDecodeError, OSError) as exc:
        raise InputError(f"labels file {path} cannot be read as text ({type(exc).__name__}).", "give a UTF-8 JSON or text file") from None
    if path.suffix.lower() == ".json" or text.lstrip().startswith(("{", "[")):
        return check_labels(_labels_from_json(path, text), f"labels file {path}", "edit that label in the file")
    labels = [line.strip() for line in text.splitlines() if line.strip()]
    if not labels:
        raise InputError(f"labels file {path} is empty.", "write one label per line")
    return labels


def _labels_from_json(path: Path, text: str) -> list[str]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"labels file {path} is not valid JSON ({exc.msg} at line {exc.lineno}).", "fix the file") from None
    if isinstance(data, list) and data and all(isinstance(v, str) for v in data):
        return list(data)
    if isinstance(data, dict) and data:
        keys, values = list(data.keys()), list(data.values())
        if all(re.fullmatch(r"-?[0-9]+", str(k)) for k in keys) and all(isinstance(v, str) for v in values):
            by_index = {int(k): v for k, v in data.items()}
        elif all(isinstance(v, int) for v in values):
            by_index = {int(v): str(k) for k, v in data.items()}
        else:
            by_index = {}
        if by_index and sorted(by_index) == list(range(len(by_index))):
            return [by_index[i] for i in range(len(by_index))]
    raise InputError(
        f"labels file {path} is not a label map.",
        'use {"0": "cat", "1": "dog"}, {"cat": 0, "dog": 1} or ["cat", "dog"] with indices 0..N-1',
    )
