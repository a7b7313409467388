"""What this CPU can compute fast: its ISA flags (from /proc/cpuinfo), read once per process.

Kept apart from bench/ because runtimes need it too: OpenVINO's ``bf16`` is offered only
where the CPU has native BF16 (AVX-512 BF16 or AMX), and refused elsewhere rather than
emulated.
"""

from __future__ import annotations

import functools
from pathlib import Path

# The flags that decide AlexNet's CPU numbers, in report order: name -> /proc/cpuinfo flags (any).
ISA_FEATURES = {
    "avx2": ("avx2",),
    "avx512": ("avx512f",),
    "vnni": ("avx512_vnni", "avx_vnni"),  # INT8 dot products (u8 x s8 -> s32 in one instruction)
    "bf16": ("avx512_bf16", "amx_bf16"),
    "amx": ("amx_tile",),
}


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo cannot be read, e.g. not Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def isa_features() -> dict[str, bool]:
    """avx2/avx512/vnni/bf16/amx: True where the CPU advertises them."""
    flags = cpu_flags()
    return {name: any(f in flags for f in names) for name, names in ISA_FEATURES.items()}


def bf16_problem(openvino_capabilities=None) -> str | None:
    """Why BF16 inference is not offered on this CPU, or None when it is.

    Both must agree: the CPU flags (native AVX-512 BF16 or AMX; without them BF16 would be
    emulated and slower than FP32) and, when given, OpenVINO's OPTIMIZATION_CAPABILITIES.
    """
    flags = cpu_flags()
    if not isa_features()["bf16"]:
        seen = "no /proc/cpuinfo flags could be read" if not flags else "its flags list neither avx512_bf16 nor amx_bf16"
        return f"this CPU has no native BF16 ({seen})"
    if openvino_capabilities is not None and "BF16" not in openvino_capabilities:
        return f"OpenVINO does not offer BF16 on this CPU (its capabilities: {', '.join(openvino_capabilities)})"
    return None
