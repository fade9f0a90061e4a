"""``resolve_device(name)``: ``auto`` → cuda, mps or cpu, whichever is available; an explicit name checked.

The one place a device name is resolved: the command line (``--device``), a ``TrainConfig.device``, a
notebook's ``device`` parameter and a results set's manifest all go through it, so ``auto`` means the
same device everywhere.
"""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(name: str) -> str:
    """``auto`` → ``cuda``, ``mps`` or ``cpu``, whichever is available; otherwise the explicit name, checked.

    Returns the name (a string: it goes into configs, records and manifests); ``torch.device(...)`` of it
    where a device is needed.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name} requested but CUDA is not available; use --device cpu or auto")
    if name not in ("cpu", "mps") and not name.startswith("cuda"):
        raise ValueError(f"unknown --device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    return name
