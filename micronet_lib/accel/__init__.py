"""The optional speed layer: how a step runs, never what it computes (up to float rounding).

- :mod:`.execution`: execution modes (precision x memory format x compile), chosen per machine by a
  short calibration and cached.
- :mod:`.allocator`: glibc malloc settings that stop every forward from page-faulting its activations.
- :mod:`.tf32`: fp32 stays true fp32 (``fp32_mode``) unless a run opts into TF32.
- :mod:`.cpuinfo`: the CPU flags that decide speed (no torch import).
- :mod:`.norm_kernel` (+ ``csrc/``): the BatchNorm + hard-swish C++ training kernel.
- :mod:`.se_kernel`: the squeeze-excitation + residual training kernel.
- :mod:`.fusion`: conv + hard-swish as one oneDNN call in evaluation.

Submodules are imported by name (``from micronet_lib.accel import execution``): this package imports
nothing itself, so ``cpuinfo`` stays free of torch.
"""
