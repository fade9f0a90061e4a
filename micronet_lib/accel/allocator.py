"""The process's memory allocator on CPU: keep freed activation buffers instead of unmapping them.

glibc's malloc serves blocks above its mmap threshold (128 KiB at start, raised dynamically up to
32 MiB as such blocks are freed) with fresh ``mmap`` calls and returns them on ``free``. Every forward
of a MicroNet at batch 128-256 allocates activations of several MiB, so in a fresh process each step
page-faults its working set anew: the authors' net evaluated at ~105 img/s in a fresh process and
~390 img/s once a few training steps had raised the dynamic threshold (issue #13). Setting the mmap
threshold to 256 MiB and a high trim threshold once, at start, removes that difference for every
caller. If jemalloc or tcmalloc was preloaded (``LD_PRELOAD``) it already pools memory and is only
recorded. Nothing is done on other C libraries (musl, macOS, Windows): ``state()`` says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

from micronet_lib.accel import OFF_NOTE, enabled

__all__ = ["configure", "state", "MMAP_THRESHOLD", "TRIM_THRESHOLD"]

# mallopt parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 256 << 20  # blocks below this come from the heap and are reused after free
TRIM_THRESHOLD = 1 << 30  # free heap top kept up to 1 GiB instead of being returned to the kernel
_PRELOADED = ("jemalloc", "tcmalloc")

_applied: dict | None = None  # per-process: mallopt changes the whole process, so we record it once


def _preloaded() -> str | None:
    preload = os.environ.get("LD_PRELOAD", "")
    for name in _PRELOADED:
        if name in preload:
            return name
    return None


def configure() -> dict:
    """Apply the setting once per process (idempotent) and return :func:`state`."""
    global _applied
    if _applied is not None:
        return dict(_applied)
    if not enabled():
        _applied = dict(allocator=platform.libc_ver()[0] or platform.system(), applied=False, note=OFF_NOTE)
        return dict(_applied)
    pooled = _preloaded()
    if pooled is not None:
        _applied = dict(allocator=pooled, applied=False, note=f"{pooled} preloaded (LD_PRELOAD); left as is")
        return dict(_applied)
    libc_name, _version = platform.libc_ver()
    if platform.system() != "Linux" or libc_name != "glibc":
        _applied = dict(allocator=libc_name or platform.system(), applied=False,
                        note="not glibc: the allocator is left as is")
        return dict(_applied)
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    _applied = dict(allocator="glibc", applied=ok, mmap_threshold=MMAP_THRESHOLD, trim_threshold=TRIM_THRESHOLD,
                    note="mallopt(M_MMAP_THRESHOLD, M_TRIM_THRESHOLD)" if ok else "mallopt refused the setting")
    return dict(_applied)


def state() -> dict:
    """What :func:`configure` did in this process, or ``{"applied": False, "note": "not configured"}``."""
    if _applied is None:
        pooled = _preloaded()
        return dict(allocator=pooled or platform.libc_ver()[0] or platform.system(), applied=False, note="not configured")
    return dict(_applied)
