"""Keep freed model-sized buffers in the process for the CLI's one-shot commands (glibc only).

glibc's malloc hands every freed block above its mmap threshold (at most 32 MB by default)
back to the kernel and faults it in again, page by zeroed page, on the next allocation. An
AlexNet is 230 MB of weights that export, conversion, calibration and evaluation copy again
and again: `alexnet quickstart` spent 42 of its 92 seconds in the kernel on that alone
(2 cores, 2026-12-05). Raising the thresholds keeps freed memory for the next copy: the same
run took 66 seconds (12 s in the kernel). The price is memory held, not returned, until the
command exits: quickstart's peak resident memory went from 3.8 GB to 4.6 GB.

`alexnet serve` is left with glibc's defaults: a long-running server should give memory back
after a burst. So is any process where the user set glibc's own malloc variables
(``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_``, ``GLIBC_TUNABLES``):
``MALLOC_TRIM_THRESHOLD_=131072`` brings back glibc's behaviour on a machine short of memory.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt's parameter numbers (glibc malloc.h) and the values set.
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
SETTINGS = ((M_MMAP_THRESHOLD, 1 << 30), (M_TRIM_THRESHOLD, 2**31 - 1), (M_TOP_PAD, 1 << 28))
LONG_RUNNING = frozenset({"serve"})
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed blocks up to 1 GB in the process; True when it agreed.

    False (and nothing changed) where the C library is not glibc (macOS, musl, Windows) or
    where the environment sets glibc's own malloc variables (the user's settings win).
    """
    if any(name in os.environ for name in USER_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(option, value) == 1 for option, value in SETTINGS)


def command_of(args: list[str]) -> str | None:
    """The subcommand named in ``alexnet``'s arguments: the first one that is not an option."""
    return next((arg for arg in args if not arg.startswith("-")), None)


def suits(args: list[str]) -> bool:
    """Whether this invocation is a one-shot command (everything but ``serve``)."""
    return command_of(args) not in LONG_RUNNING
