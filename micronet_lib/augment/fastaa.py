"""Fast-AutoAugment policy sets and their batched, generator-driven application (docs/method.md §5.2, §7).

The four CIFAR-100 sets come from the asset layer (:func:`micronet_lib.assets.load_policies`). Per
image (§7.2): one sub-policy uniformly at random; for each of its two ops, skip it when r > p (r ~ U[0, 1)),
else apply it with v = low + level·(high − low), negated with probability 0.5 for the geometric ops.
All random numbers of a batch are drawn up front from the passed ``torch.Generator`` (seedable, in a
fixed order); only the ops that fire run per image.
"""

from __future__ import annotations

import functools
import os
from typing import Sequence

import torch

from micronet_lib.augment.ops import OPS, apply_op, op_magnitude, warm_geometric_cache
from micronet_lib import assets
from micronet_lib.augment import grouped as grouped_ops  # by module: a test may replace apply_grouped

__all__ = ["CUTOUT_CENTRES", "FASTAA_4X_ORDER", "FASTAA_DEFAULT_SET", "FastAAStage", "is_policy_file", "policy_set", "policy_set_names", "resolve_set_name"]

# The paper's 4× epoch: copy k of the training set uses set k (docs/method.md §5.2).
FASTAA_4X_ORDER = (
    "fa_wresnet28x10_cifar100",
    "fa_shake26_2x96d_cifar100",
    "fa_wresnet40x2_cifar100",
    "fa_wresnet40x2_cifar100_r5",
)
# "fastaa" without a set name: the set of the first copy of the authors' epoch.
FASTAA_DEFAULT_SET = FASTAA_4X_ORDER[0]


@functools.lru_cache(maxsize=1)
def _policies() -> dict:
    return assets.load_policies()


def policy_set_names() -> list[str]:
    return list(FASTAA_4X_ORDER)


def resolve_set_name(name: str) -> str:
    """Accept the upstream function name or its short form (``wresnet40x2_r5`` → ``fa_wresnet40x2_cifar100_r5``)."""
    for full in FASTAA_4X_ORDER:
        short = full.removeprefix("fa_").replace("_cifar100", "")
        if name in (full, short):
            return full
    short_names = [f.removeprefix("fa_").replace("_cifar100", "") for f in FASTAA_4X_ORDER]
    raise ValueError(f"unknown FastAA policy set {name!r}; use one of {', '.join(FASTAA_4X_ORDER)} or {', '.join(short_names)}")


def is_policy_file(name: str) -> bool:
    """A ``fastaa:`` argument that names a policy file (a ``.json`` / ``.py`` path) rather than a released set."""
    return name.endswith((".json", ".py")) or os.sep in name or "/" in name


def policy_set(name: str) -> list:
    """The sub-policies of one set: a list of ((op, p, level), (op, p, level)).

    ``name`` is a released set (``resolve_set_name``) or the path of a policy file holding exactly one set
    (``assets.load_policies(path)``, e.g. a searched policy, docs/method.md §7.6).
    """
    if is_policy_file(name):
        sets = assets.load_policies(name)
        if len(sets) != 1:
            raise ValueError(f"policy file {name} holds {len(sets)} sets ({', '.join(sets)}); 'fastaa:<file>' needs exactly one")
        return list(next(iter(sets.values())))
    return list(_policies()[resolve_set_name(name)])


# Cutout centre per coordinate (docs/method.md §7.3): the authors call np.random.uniform(w), which numpy
# reads as low = w, high = 1.0, so c = w + (1 − w)·U is uniform on (1, w]; "uniform" is [0, w).
CUTOUT_CENTRES = ("authors", "uniform")


def _cutout_centres(u: torch.Tensor, width: int, height: int, rule: str) -> torch.Tensor:
    """Centres (cx, cy) in pixels from U[0, 1) draws ``u[..., 0:2]`` under ``rule`` (CUTOUT_CENTRES)."""
    size = torch.tensor([float(width), float(height)])
    if rule == "uniform":
        return u * size
    return size + (1.0 - size) * u


class FastAAStage:
    """Apply one FastAA policy set to a uint8 batch [N, C, H, W]; returns a new batch.

    ``cutout_centre="authors"`` (default) draws the Cutout centre on (1, W] per coordinate as the
    authors' ``np.random.uniform(w)`` does; ``"uniform"`` draws it on [0, W) (docs/method.md §7.3).
    ``grouped``: apply each op once to all images that drew it (:mod:`.grouped`, the same result bit for bit)
    instead of image by image; ``None`` groups on CUDA tensors only.
    """

    def __init__(self, subpolicies: Sequence, *, name: str = "custom", cutout_centre: str = "authors",
                 grouped: bool | None = None) -> None:
        if not subpolicies:
            raise ValueError(f"policy set {name!r} is empty")
        if cutout_centre not in CUTOUT_CENTRES:
            raise ValueError(f"cutout_centre={cutout_centre!r} is not one of {', '.join(CUTOUT_CENTRES)}")
        self.name = name
        self.cutout_centre = cutout_centre
        self.grouped = grouped
        rows = []
        for i, sub in enumerate(subpolicies):
            if len(sub) != 2:
                raise ValueError(f"policy set {name!r} sub-policy {i} has {len(sub)} ops; FastAA sub-policies have exactly 2")
            rows.append(tuple((op, float(p), op_magnitude(op, float(level))) for op, p, level in sub))
        self._subs = rows  # magnitudes precomputed once: (op, p, v)

    def __len__(self) -> int:
        return len(self._subs)

    def __repr__(self) -> str:
        return f"FastAAStage({self.name!r}, {len(self)} sub-policies)"

    def warm(self, height: int = 32, width: int = 32) -> int:
        """Precompute every geometric index map of this set (otherwise built on first use and cached)."""
        return warm_geometric_cache([(op, v) for sub in self._subs for op, _p, v in sub], height, width)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, _, height, width = images.shape
        pick = torch.randint(0, len(self._subs), (n,), generator=generator).tolist()
        coin = torch.rand(n, 2, generator=generator).tolist()
        flip_sign = torch.rand(n, 2, generator=generator).tolist()
        centre = _cutout_centres(torch.rand(n, 2, 2, generator=generator), width, height, self.cutout_centre).tolist()
        if self.grouped or (self.grouped is None and images.is_cuda):
            return grouped_ops.apply_grouped(self._subs, images, pick, coin, flip_sign, centre)
        out = images.clone()
        for i in range(n):
            img = None
            for slot, (op, p, v) in enumerate(self._subs[pick[i]]):
                if coin[i][slot] > p:
                    continue
                if OPS[op].signed and flip_sign[i][slot] < 0.5:
                    v = -v
                img = apply_op(images[i] if img is None else img, op, v, centre=tuple(centre[i][slot]))
            if img is not None:
                out[i] = img
        return out
