"""How long-running library work reports progress without knowing who is watching.

Library functions take ``progress``: None, a plain ``callable(message)`` (steps only), or
a :class:`Progress`, which also receives counted work (images preprocessed, batches
calibrated). The CLI passes a rich progress bar; Python callers may pass nothing.
"""

from __future__ import annotations

from typing import Callable, Union


class Progress:
    """Receives steps and counted work; this base class ignores them."""

    def __call__(self, message: str) -> None:
        """A new step begins (shown as a spinner line)."""

    def start(self, description: str, total: int) -> None:
        """A counted step of ``total`` units begins."""

    def advance(self, units: int = 1) -> None:
        """``units`` more units of the current counted step are done."""


class _StepsOnly(Progress):
    def __init__(self, callback: Callable[[str], None]):
        self._callback = callback

    def __call__(self, message: str) -> None:
        self._callback(message)

    def start(self, description: str, total: int) -> None:
        self._callback(description)


ProgressLike = Union[Progress, Callable[[str], None], None]


def as_progress(progress: ProgressLike) -> Progress:
    """A :class:`Progress` for whatever the caller passed."""
    if isinstance(progress, Progress):
        return progress
    if progress is None:
        return Progress()
    return _StepsOnly(progress)
