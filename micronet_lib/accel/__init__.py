"""The optional speed layer: how a step runs, never what it computes (up to float rounding).

- :mod:`.kernel_blocks`: ``accelerate(model)``: the faster CPU training layers, put into a built model.
- :mod:`.norm_kernel` (+ ``csrc/``): the BatchNorm + hard-swish C++ training kernel.
- :mod:`.execution`: execution modes (precision x memory format x compile), chosen per machine by a
  short calibration and cached.
- :mod:`.allocator`: glibc malloc settings that stop every forward from page-faulting its activations.
- :mod:`.fusion`: conv + hard-swish as one oneDNN call in evaluation.
- :mod:`.tf32`: fp32 stays true fp32 (``fp32_mode``) unless a run opts into TF32.
- :mod:`.cpuinfo`: the CPU flags that decide speed (no torch import).

``MICRONET_ACCEL=0`` turns the layer off as a whole: plain PyTorch layers, no kernel build, fp32
contiguous execution without calibration, no allocator setting, no evaluation fusion. The companion then
computes the same results, slower. (``tf32.fp32_mode`` still holds fp32 to fp32: that is fidelity, not speed.)

Submodules are imported by name (``from micronet_lib.accel import execution``): this package imports
nothing but ``os``, so ``cpuinfo`` stays free of torch.
"""

from __future__ import annotations

import os

__all__ = ["ACCEL_ENV", "enabled", "OFF_NOTE"]

ACCEL_ENV = "MICRONET_ACCEL"
OFF_NOTE = f"accel layer off ({ACCEL_ENV}=0)"


def enabled() -> bool:
    """False when ``MICRONET_ACCEL`` is 0 / off / false / no: every part of this layer then steps aside."""
    return os.environ.get(ACCEL_ENV, "").strip().lower() not in ("0", "off", "false", "no")
