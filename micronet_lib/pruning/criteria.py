"""Magnitude criteria: which weights are prunable and which of them a rate removes (docs/method.md §8.2).

The authors pool |w| over every parameter with ndim > 1, take the p-th percentile t of the pool with
numpy's linear interpolation, and keep w ⟺ |w| > t. With N pooled values and q = p/100 · (N − 1),
that removes exactly ``floor(q) + 1`` values whenever the two values around position q differ; this
count reproduces all five released checkpoints (docs/method.md §4.5: e.g. 141,355 of 471,184 at 30 %).

Two tie rules (``PruneConfig.ties``):

* ``"exact"`` (default): remove exactly ``floor(q) + 1`` values, the smallest by |w|, breaking ties
  by position in the pool (stable sort). Identical to the authors' threshold whenever the boundary
  values differ, and never off by more than the rounding of q when they tie. Exact zeros always
  sort first, so already-pruned weights stay pruned and masks nest.
* ``"threshold"``: the authors' literal rule, ``t = np.percentile(pool_float32, p)``, keep |w| > t.
  Ties at t (and float32 rounding of t onto the next value) remove every tied weight.

Both rules always remove exact zeros (|0| ≤ t for every t ≥ 0), so after pruning ``mask == (w ≠ 0)``
exactly, the invariant of every released checkpoint (docs/method.md §4.4). If a model already has more
zeros than the rate asks for, its sparsity simply stays higher (masks cannot un-prune), with a log
warning. Rate 0 removes only exact zeros (numpy's 0th percentile would also remove the minimum).
"""

from __future__ import annotations

import logging
import math
import numbers
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch
import torch.nn as nn

from micronet_lib.models.masks import attach_mask, has_mask

__all__ = [
    "SCOPES",
    "TIE_RULES",
    "PruneConfig",
    "prunable",
    "prunable_modules",
    "n_to_prune",
    "compute_masks",
    "prune_to_rate",
]

log = logging.getLogger(__name__)

SCOPES = ("global", "layer")
TIE_RULES = ("exact", "threshold")


@dataclass(frozen=True)
class PruneConfig:
    """One pruning step: remove ``rate_percent`` % of the prunable weights (docs/method.md §8.2).

    ``scope="global"`` ranks all prunable weights together (the authors); ``"layer"`` applies the
    same rate to each tensor separately. ``ties`` is explained in the module docstring.
    """

    rate_percent: float
    scope: str = "global"
    ties: str = "exact"

    def __post_init__(self) -> None:
        rate = self.rate_percent
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not math.isfinite(rate):
            raise ValueError(f"rate_percent={rate!r} must be a finite number in [0, 100)")
        if not 0.0 <= float(rate) < 100.0:
            raise ValueError(f"rate_percent={rate!r} is outside [0, 100); a rate is the percentage of weights removed")
        if self.scope not in SCOPES:
            raise ValueError(f"scope={self.scope!r} is not one of {SCOPES}")
        if self.ties not in TIE_RULES:
            raise ValueError(f"ties={self.ties!r} is not one of {TIE_RULES}")


def prunable(name: str, param: torch.Tensor) -> bool:
    """True for the weights the authors prune: a ``weight`` with ndim > 1 (docs/method.md §8.2).

    That is every conv kernel (stem, expand, depthwise, project, shortcut, SE fc1/fc2, dead stride-2
    SE included) and the classifier weight. Biases (ndim 1) and BatchNorm γ/β (ndim 1) never are.
    """
    return name.rsplit(".", 1)[-1] == "weight" and param.ndim > 1


def _unwrap(model: nn.Module) -> nn.Module:
    # torch.compile wraps the model; prune the original so names carry no "_orig_mod." prefix.
    return getattr(model, "_orig_mod", model)


def prunable_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(module_name, module)`` for every module owning a prunable ``weight``, in ``named_modules`` order."""
    out = []
    for name, module in _unwrap(model).named_modules():
        weight = module._parameters.get("weight") if hasattr(module, "_parameters") else None
        if weight is not None and prunable(f"{name}.weight" if name else "weight", weight):
            out.append((name, module))
    return out


def n_to_prune(numel: int, rate_percent: float) -> int:
    """How many of ``numel`` pooled values numpy's percentile threshold removes when there are no ties.

    q = p/100 · (numel − 1) is evaluated exactly (``Fraction``), so e.g. 60 % of 450,456 gives
    q = 270,273 and 270,274 removals, as in ``micronet_v1_pr_60`` (docs/method.md §4.5), independent of
    float rounding. Rate 0 removes nothing (beyond exact zeros, see module docstring).
    """
    if rate_percent <= 0 or numel <= 0:
        return 0
    # repr() gives the decimal the caller wrote (0.1 → 1/10), not the nearest binary fraction.
    q = Fraction(repr(float(rate_percent))) / 100 * (numel - 1)
    return min(numel, math.floor(q) + 1)


def _effective_magnitudes(module: nn.Module) -> torch.Tensor:
    # A masked weight may be nonzero between an optimiser step and the next forward; it is pruned.
    w = module.weight.detach()
    if has_mask(module):
        w = w * module.mask
    return w.abs().float().flatten().cpu()


def _keep_exact(pool: torch.Tensor, n_prune: int) -> torch.Tensor:
    n_zero = int((pool == 0).sum())
    n_prune = max(n_prune, n_zero)
    keep = torch.ones(pool.numel(), dtype=torch.bool)
    if n_prune:
        order = torch.sort(pool, stable=True).indices
        keep[order[:n_prune]] = False
    return keep


def _keep_threshold(pool: torch.Tensor, rate_percent: float) -> torch.Tensor:
    if rate_percent <= 0:
        return pool > 0
    t = np.percentile(pool.numpy(), rate_percent)  # float32 pool, like the authors' numpy call
    return torch.from_numpy(pool.numpy() > t)


def compute_masks(model: nn.Module, rate_percent: float, *, scope: str = "global", ties: str = "exact") -> dict[str, torch.Tensor]:
    """Masks (``{"<module>.mask": 0/1 float tensor}``) that remove ``rate_percent`` % by magnitude; attaches nothing."""
    cfg = PruneConfig(rate_percent=rate_percent, scope=scope, ties=ties)
    modules = prunable_modules(model)
    if not modules:
        raise ValueError(f"{type(_unwrap(model)).__name__} has no prunable weights (ndim > 1 'weight' parameters)")
    pools = [_effective_magnitudes(m) for _, m in modules]

    def keep_of(pool: torch.Tensor) -> torch.Tensor:
        if cfg.ties == "threshold":
            return _keep_threshold(pool, cfg.rate_percent)
        return _keep_exact(pool, n_to_prune(pool.numel(), cfg.rate_percent))

    if cfg.scope == "global":
        keep_all = keep_of(torch.cat(pools))
        keeps = list(torch.split(keep_all, [p.numel() for p in pools]))
    else:
        keeps = [keep_of(p) for p in pools]

    masks: dict[str, torch.Tensor] = {}
    total = removed = 0
    for (name, module), keep in zip(modules, keeps):
        w = module.weight
        masks[f"{name}.mask" if name else "mask"] = keep.reshape(w.shape).to(device=w.device, dtype=w.dtype)
        total += keep.numel()
        removed += int((~keep).sum())
    wanted = n_to_prune(total, cfg.rate_percent) if cfg.scope == "global" else None
    if wanted is not None and removed > wanted + 1:
        log.warning(
            "pruning to %.4g %% removed %d of %d weights (%.6f), more than the %d asked for: "
            "the model already had that many zeros or tied magnitudes",
            cfg.rate_percent, removed, total, removed / total, wanted,
        )
    log.debug("masks at %.4g %% (%s, %s): sparsity %.6f over %d weights", cfg.rate_percent, cfg.scope, cfg.ties, removed / total, total)
    return masks


def prune_to_rate(model: nn.Module, rate_percent: float, *, scope: str = "global", ties: str = "exact") -> dict[str, torch.Tensor]:
    """Compute magnitude masks at ``rate_percent`` % and attach them; returns ``{"<module>.mask": mask}``.

    docs/method.md §8.2/§8.4: the masks come from the model's current (masked) weights; weights already
    masked or exactly zero stay pruned, so successive calls give nested masks. Masked weights are
    zeroed immediately and before every forward (``masks.attach_mask``); pair with
    ``keep_masked(optimizer, model)`` so they are also zero after every optimiser step.
    """
    masks = compute_masks(model, rate_percent, scope=scope, ties=ties)
    base = _unwrap(model)
    for key, mask in masks.items():
        module_name = key[: -len(".mask")] if key != "mask" else ""
        attach_mask(base.get_submodule(module_name), mask)
    return masks
