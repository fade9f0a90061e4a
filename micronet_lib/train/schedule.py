"""Learning rate per (cycle, epoch): pure functions, so resuming needs only the epoch counter.

The authors step a cosine scheduler once at the *start* of every epoch, before any update, so the
lr used throughout epoch e (0-based) of a T-epoch cycle is (docs/method.md §5.4)

    η_e = η_min + ½ (η0 − η_min) (1 + cos(π (e + 1) / T))

-- e = 0 already sits one step down the cosine, and e = T − 1 ends exactly at η_min. Every cycle
restarts the cosine with a fresh optimiser (warm restarts, period T).
"""

from __future__ import annotations

import math

__all__ = ["cosine_lr", "step_lr", "lr_at"]


def cosine_lr(epoch: int, *, lr: float, lr_min: float, epochs_per_cycle: int) -> float:
    """The authors' step-at-epoch-start cosine (docs/method.md §5.4) for 0-based ``epoch`` within a cycle."""
    if not 0 <= epoch < epochs_per_cycle:
        raise ValueError(f"epoch={epoch} is outside the cycle [0, {epochs_per_cycle})")
    return lr_min + 0.5 * (lr - lr_min) * (1.0 + math.cos(math.pi * (epoch + 1) / epochs_per_cycle))


def step_lr(epoch: int, *, lr: float, milestones: tuple[int, ...], gamma: float) -> float:
    """The authors' unused alternative: ×gamma at each milestone within a cycle (docs/method.md §5.4)."""
    # MultiStepLR stepped at epoch start: the milestone epoch itself already uses the decayed rate
    # after (epoch + 1) scheduler steps, matching the cosine's convention.
    passed = sum(1 for m in milestones if epoch + 1 >= m)
    return lr * gamma**passed


def lr_at(config, epoch: int) -> float:
    """lr for 0-based ``epoch`` within any cycle of ``config`` (a ``TrainConfig``)."""
    if config.schedule == "cosine":
        return cosine_lr(epoch, lr=config.lr, lr_min=config.lr_min, epochs_per_cycle=config.epochs_per_cycle)
    return step_lr(epoch, lr=config.lr, milestones=tuple(config.step_milestones), gamma=config.step_gamma)
