"""Class labels from the files tutorials leave behind (torch-free)."""

from __future__ import annotations

import json
from pathlib import Path

from alexnet_deploy.errors import InputError


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
        if all(str(k).lstrip("-").isdigit() for k in keys) and all(isinstance(v, str) for v in values):
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


def check_labels(labels: list[str], source: str, fix: str) -> list[str]:
    """``labels`` unchanged, or InputError if one is empty or spans lines.

    Triton's labels.txt (and this toolkit's own reader) take one label per line, so a
    line break inside a label would shift every later class onto the wrong index, and
    an empty one would vanish from the file.
    """
    for index, label in enumerate(labels):
        shown = repr(label) if len(label) <= 60 else repr(label[:57]) + "..."
        if not label.strip():
            raise InputError(f"{source}: label {index} is empty.", f"{fix}; every class needs a visible name")
        if label.splitlines() != [label]:  # \n, \r and the other breaks str.splitlines knows
            raise InputError(f"{source}: label {index} {shown} contains a line break.", f"{fix}; a label must fit on one line")
    return labels


def default_labels(num_classes: int) -> list[str]:
    """Placeholder labels ``class_0 ... class_{N-1}`` when none were given."""
    return [f"class_{i}" for i in range(num_classes)]
