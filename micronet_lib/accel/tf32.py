""""fp32 means fp32": the process-wide TF32 switches of CUDA matmul and cuDNN (docs/method.md §5.5, §5.8).

PyTorch lets cuDNN convolutions run in TF32 (a 10-bit mantissa) on Ampere and later GPUs unless told
otherwise; the authors' fp32 runs (PyTorch 1.1) were true IEEE fp32. ``fp32_mode(allow_tf32=False)``
sets CUDA matmul and cuDNN conv/RNN to IEEE fp32 for the duration of a ``with`` block and restores the
previous settings afterwards, so nothing leaks into the caller's process. The switches are plain
process flags: setting them needs no GPU, and on a CPU-only machine they change nothing.

PyTorch 2.9+ has the ``fp32_precision`` API ("ieee" | "tf32" | "none" = inherit); mixing it with the
legacy ``allow_tf32`` booleans raises, so this module uses the new API where it exists and the legacy
booleans only on older versions.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

__all__ = ["fp32_mode", "tf32_flags"]


def _switches() -> dict[str, object]:
    """Name → the backend object whose ``fp32_precision`` (or legacy ``allow_tf32``) we set."""
    backends = torch.backends
    return {"cuda_matmul": backends.cuda.matmul, "cudnn_conv": getattr(backends.cudnn, "conv", backends.cudnn),
            "cudnn_rnn": getattr(backends.cudnn, "rnn", backends.cudnn)}


def _new_api() -> bool:
    return hasattr(torch.backends.cuda.matmul, "fp32_precision") and hasattr(torch.backends.cudnn, "conv")


def tf32_flags() -> dict[str, str]:
    """The current setting of each switch: "ieee" (true fp32), "tf32", or "none" (inherits the default)."""
    if _new_api():
        return {name: str(obj.fp32_precision) for name, obj in _switches().items()}
    legacy = {"cuda_matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn_conv": torch.backends.cudnn.allow_tf32}
    return {name: "tf32" if on else "ieee" for name, on in legacy.items()}


def _set(flags: dict[str, str]) -> None:
    if _new_api():
        for name, obj in _switches().items():
            if name in flags:
                obj.fp32_precision = flags[name]
        return
    torch.backends.cuda.matmul.allow_tf32 = flags["cuda_matmul"] == "tf32"
    torch.backends.cudnn.allow_tf32 = flags["cudnn_conv"] == "tf32"


@contextlib.contextmanager
def fp32_mode(*, allow_tf32: bool = False) -> Iterator[dict[str, str]]:
    """Run the block with TF32 off (``allow_tf32=False``: IEEE fp32) or on; yields the flags in force.

    The previous flags are restored on exit, also when the block raises.
    """
    if not isinstance(allow_tf32, bool):
        raise ValueError(f"allow_tf32={allow_tf32!r} must be True or False")
    before = tf32_flags()
    wanted = "tf32" if allow_tf32 else "ieee"
    _set({name: wanted for name in before})
    try:
        yield tf32_flags()
    finally:
        _set(before)
