"""The comma lists and small values users type on the command line, parsed once for every command.

Each parser raises InputError naming the option and an example, so a typo is a one-line
error wherever it is made.
"""

from __future__ import annotations

from typing import Sequence

from alexnet_deploy.errors import InputError


def parse_names(text: str, option: str, allowed: Sequence[str] | None = None) -> list[str]:
    """``"a,b,a"`` -> ['a', 'b'] (each once, in order), checked against ``allowed``."""
    items = list(dict.fromkeys(t.strip() for t in str(text).split(",") if t.strip()))
    if not items:
        example = ",".join(list(allowed or ("a", "b"))[:2])
        raise InputError(f"{option} is empty.", f"e.g. {option} {example}")
    if allowed is not None:
        unknown = [t for t in items if t not in allowed]
        if unknown:
            raise InputError(f"unknown {option.lstrip('-')} {', '.join(unknown)}.", f"choose from {', '.join(allowed)}")
    return items


def parse_positive_ints(text: str | Sequence[int], option: str, example: str) -> list[int]:
    """``"1,8,32"`` (or a sequence) -> [1, 8, 32]; InputError unless every item is an integer >= 1."""
    items = str(text).split(",") if isinstance(text, str) else list(text)
    try:
        values = [int(str(v).strip()) for v in items if str(v).strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise InputError(f"{option} {text!r} is not a list of positive integers.", f"e.g. {option} {example}")
    return values


def parse_triple(text: str | None, option: str) -> tuple[float, float, float] | None:
    """``"0.485,0.456,0.406"`` -> a 3-tuple of floats (None stays None); InputError otherwise."""
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise InputError(f"{option} {text!r} is not three numbers.", f"e.g. {option} 0.485,0.456,0.406")
    return values  # type: ignore[return-value]
