"""Keep freed model-sized buffers in the process for the CLI's one-shot commands (glibc only).

glibc's malloc hands every freed block above its mmap threshold (at most 32 MB by default)
back to the kernel and faults it in again, page by zeroed page, on the next allocation. An
AlexNet is 230 MB of weights that export, conversion, calibration and evaluation copy again
and again: `alexnet quickstart` spent 42 of its 92 seconds in the kernel on that alone
(2 cores, 2026-12-05). Raising the thresholds keeps freed memory for the next copy: the same
run took 66 seconds (12 s in the kernel). The process's peak memory is what it was; memory is
simply not returned before the command exits.

`alexnet serve` is left with glibc's defaults: a long-running server should give memory back
after a burst.
"""

from __future__ import annotations

import ctypes
import ctypes.util

# mallopt's parameter numbers (glibc malloc.h) and the values set.
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
SETTINGS = ((M_MMAP_THRESHOLD, 1 << 30), (M_TRIM_THRESHOLD, 2**31 - 1), (M_TOP_PAD, 1 << 28))
LONG_RUNNING = frozenset({"serve"})


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed blocks up to 1 GB in the process; True when it agreed.

    False (and nothing changed) where the C library is not glibc (macOS, musl, Windows).
    """
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
