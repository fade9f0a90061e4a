"""Input-mixing regularisers: CutMix (docs/method.md §6.4), Mixup (§6.5) and Cutout (§7.5).

All three are seedable through an optional ``torch.Generator``. CutMix and Mixup draw one λ (Beta(α, α))
per *batch*; Beta is not available on a ``torch.Generator``, so each call derives a NumPy generator from
one 62-bit integer drawn from ``generator`` (or from torch's global RNG when it is ``None``): the same
torch seed always gives the same λ, box and permutation.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["cutmix", "cutmix_box", "cutout", "mixup"]


def _numpy_rng(generator: torch.Generator | None) -> np.random.Generator:
    seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    return np.random.default_rng(seed)


def _check_batch(x: torch.Tensor, y: torch.Tensor, alpha: float) -> None:
    if x.ndim != 4:
        raise ValueError(f"x must be a batch [N, C, H, W], got shape {tuple(x.shape)}")
    if y.shape[:1] != x.shape[:1]:
        raise ValueError(f"y has {y.shape[0] if y.ndim else 0} labels for {x.shape[0]} images")
    if not alpha >= 0:
        raise ValueError(f"alpha={alpha!r} must be >= 0 (Beta(alpha, alpha); 0 disables mixing)")


def cutmix_box(height: int, width: int, lam: float, *, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """The authors' CutMix box (docs/method.md §6.4): ``(r0, r1, c0, c1)``, rows [r0, r1) and columns [c0, c1).

    cut = int(side·√(1 − λ)) per side; the centre is a uniform integer per axis (rows first); the box is
    [c − cut//2, c + cut//2) clipped to the image, so an odd cut loses one pixel before clipping.
    """
    ratio = float(np.sqrt(1.0 - lam))
    cut_r, cut_c = int(height * ratio), int(width * ratio)
    cr, cc = int(rng.integers(height)), int(rng.integers(width))
    r0, r1 = int(np.clip(cr - cut_r // 2, 0, height)), int(np.clip(cr + cut_r // 2, 0, height))
    c0, c1 = int(np.clip(cc - cut_c // 2, 0, width)), int(np.clip(cc + cut_c // 2, 0, width))
    return r0, r1, c0, c1


def cutmix(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    alpha: float = 1.0,
    prob: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """CutMix one batch exactly as the authors (docs/method.md §6.4); returns ``(x_mixed, y_a, y_b, lam)``.

    With probability ``prob`` (the authors: 1): λ ~ Beta(α, α), a permutation π, one box for the whole
    batch pasted from x[π], y_a = y, y_b = y[π], and λ reset to 1 − box area / (H·W) (an empty box gives
    λ = 1). Otherwise the batch is returned unchanged with λ = 1. ``x`` is not modified.
    """
    _check_batch(x, y, alpha)
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"prob={prob!r} must lie in [0, 1]")
    rng = _numpy_rng(generator)
    # Draw order follows the authors: the coin first, then λ, the permutation and the box.
    if alpha == 0 or not rng.random() < prob:
        return x, y, y, 1.0
    lam = float(rng.beta(alpha, alpha))
    perm = torch.from_numpy(rng.permutation(x.shape[0])).to(x.device)
    height, width = x.shape[-2:]
    r0, r1, c0, c1 = cutmix_box(height, width, lam, rng=rng)
    mixed = x.clone()
    mixed[:, :, r0:r1, c0:c1] = x[perm, :, r0:r1, c0:c1]
    lam = 1.0 - (r1 - r0) * (c1 - c0) / float(height * width)
    return mixed, y, y[perm.to(y.device)], lam


def mixup(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    alpha: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Mixup (Zhang et al. 2018; broken and unused in the authors' code, docs/method.md §6.5).

    λ ~ Beta(α, α) per batch, x̃ = λ·x + (1 − λ)·x[π]; returns ``(x̃, y, y[π], λ)`` for the mixed loss.
    """
    _check_batch(x, y, alpha)
    if not x.is_floating_point():
        raise ValueError(f"mixup needs a floating-point batch, got {x.dtype}")
    if alpha == 0:
        return x, y, y, 1.0
    rng = _numpy_rng(generator)
    lam = float(rng.beta(alpha, alpha))
    perm = torch.from_numpy(rng.permutation(x.shape[0])).to(x.device)
    return lam * x + (1.0 - lam) * x[perm], y, y[perm.to(y.device)], lam


def cutout(
    images: torch.Tensor, *, size: int = 16, fill: float = 0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Cutout (DeVries & Taylor 2017) as in the authors' "cutout" mode (docs/method.md §7.5).

    One ``size``×``size`` hole per image, centre a uniform integer (row, then column), box
    [c − size//2, c + size//2) clipped to the image, set to ``fill`` (0: applied before normalisation).
    ``images`` is [N, C, H, W] of any dtype; a new tensor is returned.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be a batch [N, C, H, W], got shape {tuple(images.shape)}")
    if not isinstance(size, int) or size < 0:
        raise ValueError(f"size={size!r} must be an int >= 0 (side of the hole in pixels)")
    n, _, height, width = images.shape
    rows = torch.randint(0, height, (n,), generator=generator).to(images.device)
    cols = torch.randint(0, width, (n,), generator=generator).to(images.device)
    half = size // 2
    r = torch.arange(height, device=images.device)
    c = torch.arange(width, device=images.device)
    in_rows = (r[None, :] >= rows[:, None] - half) & (r[None, :] < rows[:, None] + half)
    in_cols = (c[None, :] >= cols[:, None] - half) & (c[None, :] < cols[:, None] + half)
    hole = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]  # [N, 1, H, W]
    return images.masked_fill(hole, fill)
