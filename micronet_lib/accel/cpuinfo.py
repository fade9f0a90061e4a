"""What this CPU is: its model name and the flags that decide which fast kernels torch can run.

One reader of ``/proc/cpuinfo`` for the execution-mode cache key and calibration (``execution``), the
benchmarks (``bench.measure``) and the manifest of a results set (``results_sets``). No torch import, so
the results and pipeline modules stay light.
"""

from __future__ import annotations

import platform
from pathlib import Path

__all__ = ["SPEED_FLAGS", "cpu_flags"]

# CPU flags that decide which kernels run fast (AVX-512 paths, native bf16 matmuls/convs, AMX).
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def _cpuinfo() -> tuple[str, set[str]]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), set()
    model, flags = "unknown CPU", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model == "unknown CPU":
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return model, flags


def cpu_flags() -> dict:
    """``{"model": ..., "flags": {flag: bool for SPEED_FLAGS}}`` of this CPU (from /proc/cpuinfo)."""
    model, flags = _cpuinfo()
    return {"model": model, "flags": {f: f in flags for f in SPEED_FLAGS}}
