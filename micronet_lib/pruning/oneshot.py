"""One-shot pruning of any checkpoint to a rate, with optional BN recalibration (issue #7; docs/method.md §8.2).

The authors only prune inside training (§8.4); one-shot pruning is the companion's probe of what a
rate costs before fine-tuning. Pruning shifts every layer's activation statistics, so BN running
statistics can be re-estimated on training images (``evaluate.recalibrate_bn``) before evaluating.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch.nn as nn

from micronet_lib.pruning.checkpoint import load_pruned
from micronet_lib.pruning.criteria import PruneConfig, prune_to_rate
from micronet_lib.pruning.report import global_sparsity, nesting_violations
from micronet_lib.evaluate import recalibrate_bn

__all__ = ["oneshot_prune"]

log = logging.getLogger(__name__)


def oneshot_prune(
    source: "str | os.PathLike | nn.Module",
    rate_percent: float,
    *,
    scope: str = "global",
    ties: str = "exact",
    arch: str | None = None,
    recalibrate: Any = None,
    recalibrate_images: int = 2560,
    device: str = "cpu",
    seed: int = 0,
) -> nn.Module:
    """Load ``source`` (released name, path or model), prune it to ``rate_percent`` %, optionally recalibrate BN.

    ``recalibrate``: a ``data.Dataset`` whose training split re-estimates the BN statistics
    (``evaluate.recalibrate_bn``), or None. Existing masks are kept (the new ones nest inside them).
    Returns the masked model in eval mode on CPU.
    """
    cfg = PruneConfig(rate_percent=rate_percent, scope=scope, ties=ties)  # bad input fails before loading
    if recalibrate_images < 1:
        raise ValueError(f"recalibrate_images={recalibrate_images!r} must be a positive number of images")
    model = source if isinstance(source, nn.Module) else load_pruned(source, arch=arch)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    prune_to_rate(model, cfg.rate_percent, scope=cfg.scope, ties=cfg.ties)
    violations = nesting_violations(before, model)
    if violations:  # cannot happen with our criteria; a guard against future edits
        raise RuntimeError(f"one-shot pruning un-pruned {violations} weights; masks must nest")
    log.info("pruned to %.4g %% (%s): global sparsity %.6f", cfg.rate_percent, cfg.scope, global_sparsity(model))
    if recalibrate is not None:
        recalibrate_bn(model, recalibrate, n_images=recalibrate_images, device=device, seed=seed)
        model.to("cpu")
    return model.eval()
