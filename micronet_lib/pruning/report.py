"""Sparsity per layer and per layer group, and nesting of masks between checkpoints (docs/method.md §4.4–4.5).

Everything here reads a state_dict (or a model's), so a checkpoint can be reported without building a
model. Sparsity is the exact-zero fraction of each prunable weight (ndim > 1, ``criteria.prunable``):
the quantity the scorer charges (docs/scoring.md: density from exact zeros, not from masks). Groups are
``models.micronet.weight_group``'s (stem, expand, depthwise, project, shortcut, se_fc1, se_fc2,
classifier); a weight outside a MicroNet is grouped as ``other``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import pandas as pd
import torch
import torch.nn as nn

from micronet_lib.pruning.checkpoint import read_state_dict
from micronet_lib.pruning.criteria import prunable
from micronet_lib.models.micronet import weight_group

__all__ = [
    "GROUP_ORDER",
    "sparsity_table",
    "group_table",
    "global_sparsity",
    "sparsity_summary",
    "nesting_table",
    "nesting_violations",
    "chain_violations",
]

# Row order of docs/method.md §4.5.
GROUP_ORDER = ("stem", "expand", "depthwise", "project", "shortcut", "se_fc1", "se_fc2", "classifier", "other")

def _state(source: Any) -> Mapping[str, torch.Tensor]:
    if isinstance(source, nn.Module):
        return read_state_dict(getattr(source, "_orig_mod", source).state_dict())
    return read_state_dict(source)


def _group(name: str) -> str:
    try:
        return weight_group(name)
    except ValueError:
        return "other"


def _prunable_items(state: Mapping[str, torch.Tensor]):
    for key, value in state.items():
        if prunable(key, value) and value.is_floating_point():
            yield key, value


def sparsity_table(source: Any) -> pd.DataFrame:
    """One row per prunable weight: name, group, shape, numel, nnz, sparsity, masked, mask_kept."""
    state = _state(source)
    rows = []
    for key, w in _prunable_items(state):
        mask = state.get(key[: -len("weight")] + "mask")
        numel, nnz = w.numel(), int((w != 0).sum())
        rows.append(
            dict(
                name=key,
                group=_group(key),
                shape="×".join(str(s) for s in w.shape),
                numel=numel,
                nnz=nnz,
                sparsity=1.0 - nnz / numel,
                masked=mask is not None,
                mask_kept=int(mask.sum()) if mask is not None else numel,
            )
        )
    if not rows:
        raise ValueError("no prunable weights (ndim > 1 'weight' tensors) found")
    return pd.DataFrame(rows)


def group_table(source: Any, *, total: bool = True) -> pd.DataFrame:
    """Per group (docs/method.md §4.5 rows, in that order): numel, nnz, sparsity; plus an ``all`` row (ndim > 1)."""
    layers = sparsity_table(source)
    grouped = layers.groupby("group", sort=False)[["numel", "nnz"]].sum()
    order = [g for g in GROUP_ORDER if g in grouped.index]
    table = grouped.loc[order]
    if total:
        table.loc["all"] = [int(layers["numel"].sum()), int(layers["nnz"].sum())]
    table = table.astype("int64")
    table["sparsity"] = 1.0 - table["nnz"] / table["numel"]
    table.index.name = "group"
    return table


def global_sparsity(source: Any) -> float:
    """Exact-zero fraction over all prunable weights (ndim > 1), e.g. 0.600001 for ``micronet_v1_pr_60``."""
    layers = sparsity_table(source)
    return 1.0 - float(layers["nnz"].sum()) / float(layers["numel"].sum())


def sparsity_summary(source: Any) -> dict[str, Any]:
    """JSON-ready ``{numel, nnz, sparsity, groups: {g: {...}}, layers: {name: {...}}}``."""
    layers = sparsity_table(source)
    groups = group_table(source, total=False)
    return {
        "numel": int(layers["numel"].sum()),
        "nnz": int(layers["nnz"].sum()),
        "sparsity": 1.0 - float(layers["nnz"].sum()) / float(layers["numel"].sum()),
        "groups": {g: {"numel": int(r.numel), "nnz": int(r.nnz), "sparsity": float(r.sparsity)} for g, r in groups.iterrows()},
        "layers": {
            r.name: {"group": r.group, "numel": int(r.numel), "nnz": int(r.nnz), "sparsity": float(r.sparsity), "masked": bool(r.masked)}
            for r in layers.itertuples(index=False)
        },
    }


def _kept(state: Mapping[str, torch.Tensor], key: str) -> torch.Tensor:
    # A mask says what is kept; without one, the nonzero weights are (released files: identical, §4.4).
    mask = state.get(key[: -len("weight")] + "mask")
    return (mask != 0) if mask is not None else (state[key] != 0)


def nesting_table(outer: Any, inner: Any) -> pd.DataFrame:
    """Per prunable weight: entries kept in ``inner`` (the sparser, later one) but pruned in ``outer``.

    Nested masks (outer ⊇ inner as sets of kept weights, docs/method.md §4.4) have 0 violations everywhere.
    """
    a, b = _state(outer), _state(inner)
    keys_a = [k for k, _ in _prunable_items(a)]
    keys_b = [k for k, _ in _prunable_items(b)]
    if keys_a != keys_b:
        only = sorted(set(keys_a) ^ set(keys_b))
        raise ValueError(f"checkpoints hold different prunable weights (e.g. {only[:3]}); nesting needs the same architecture")
    rows = []
    for key in keys_a:
        if a[key].shape != b[key].shape:
            raise ValueError(f"{key}: shape {tuple(a[key].shape)} vs {tuple(b[key].shape)}; nesting needs the same architecture")
        ka, kb = _kept(a, key), _kept(b, key)
        rows.append(dict(name=key, group=_group(key), outer_kept=int(ka.sum()), inner_kept=int(kb.sum()), violations=int((kb & ~ka).sum())))
    return pd.DataFrame(rows)


def nesting_violations(outer: Any, inner: Any) -> int:
    """Total number of weights kept in ``inner`` but pruned in ``outer`` (0 ⟺ nested)."""
    return int(nesting_table(outer, inner)["violations"].sum())


def chain_violations(chain: Sequence[Any]) -> list[int]:
    """Violations between consecutive checkpoints of a chain, e.g. pr_15 → pr_30 → pr_45 → pr_60: ``[0, 0, 0]``."""
    if len(chain) < 2:
        raise ValueError(f"a chain needs at least 2 checkpoints, got {len(chain)}")
    states = [_state(c) for c in chain]
    return [nesting_violations(states[i], states[i + 1]) for i in range(len(states) - 1)]
