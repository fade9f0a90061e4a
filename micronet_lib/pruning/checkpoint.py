"""Masked checkpoints in the authors' layout: read, check, load strictly, write atomically (docs/method.md §4.2–4.4).

A pruned checkpoint is a plain state_dict whose ``<module>.mask`` buffers follow their weights, the
layout of the released files; the scorer reads density from the weights' exact zeros (docs/scoring.md),
so a written checkpoint always satisfies ``mask == (weight ≠ 0)`` on every masked tensor.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from micronet_lib.runstore import checksums
from micronet_lib.fileio import atomic_torch_save, atomic_write_json
from micronet_lib.models.masks import apply_masks
from micronet_lib import assets
from micronet_lib.models import build_model
from micronet_lib.models.checkpoints import infer_architecture, load_checkpoint, load_into

__all__ = [
    "MASK_CHECKS",
    "read_state_dict",
    "mask_disagreements",
    "check_masks",
    "load_masked_state_dict",
    "model_from_state_dict",
    "load_pruned",
    "save_pruned",
]

log = logging.getLogger(__name__)

# "strict": mask == (weight ≠ 0), the invariant of every released file (docs/method.md §4.4).
# "pruned": only require pruned entries to be zero (a kept weight may be exactly zero by chance).
MASK_CHECKS = ("strict", "pruned", "none")
_WRAPPER_KEYS = ("model", "state_dict", "net")
_PREFIXES = ("_orig_mod.", "module.")


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def read_state_dict(source: str | os.PathLike | Mapping[str, Any]) -> "OrderedDict[str, torch.Tensor]":
    """State dict (CPU tensors) of a released asset name, a checkpoint path, or an in-memory mapping.

    Accepts the released plain OrderedDicts (saved as CUDA tensors, hence ``map_location="cpu"``,
    docs/method.md §4.2), a wrapper dict holding one under ``model``/``state_dict``/``net``, and strips the
    ``_orig_mod.`` (torch.compile) and ``module.`` (DataParallel) prefixes.
    """
    if isinstance(source, Mapping):
        raw: Any = source
        where = "the given mapping"
    else:
        path = Path(source)
        if not path.exists():
            path = _released_path(str(source))
        raw = checksums.torch_load(path)
        where = str(path)
    if isinstance(raw, Mapping):
        for key in _WRAPPER_KEYS:
            if isinstance(raw.get(key), Mapping):
                raw = raw[key]
                break
    if not isinstance(raw, Mapping) or not raw or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise ValueError(f"{where} is not a state_dict (a mapping of names to tensors, optionally under 'model')")
    return OrderedDict((_strip(k), v.detach().cpu()) for k, v in raw.items())


def _released_path(name: str) -> Path:
    asset = name if name.endswith(".t7") else f"{name}.t7"
    if asset not in assets.list_assets():
        raise FileNotFoundError(
            f"checkpoint {name!r} is neither an existing file nor a released checkpoint; "
            f"released: {', '.join(a[:-3] for a in assets.list_assets() if a.endswith('.t7'))}"
        )
    return assets.fetch(asset)


def mask_disagreements(state_dict: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, int]]:
    """``{"<module>.mask": (nonzero weights under a 0 mask, zero weights under a 1 mask)}`` per mask.

    Raises ``ValueError`` for a mask without its weight, of another shape, or with values other than 0/1.
    """
    out: dict[str, tuple[int, int]] = {}
    for key, mask in state_dict.items():
        if not key.endswith("mask") or (key != "mask" and not key.endswith(".mask")):
            continue
        wkey = key[: -len("mask")] + "weight"
        weight = state_dict.get(wkey)
        if weight is None:
            raise ValueError(f"mask {key!r} has no weight {wkey!r} in the checkpoint")
        if tuple(mask.shape) != tuple(weight.shape):
            raise ValueError(f"mask {key!r} has shape {tuple(mask.shape)} but {wkey!r} has {tuple(weight.shape)}")
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError(f"mask {key!r} holds values other than 0 and 1")
        nonzero = weight != 0
        out[key] = (int((nonzero & (mask == 0)).sum()), int((~nonzero & (mask == 1)).sum()))
    return out


def check_masks(state_dict: Mapping[str, torch.Tensor], *, check: str = "strict", where: str = "checkpoint") -> None:
    """Raise ``ValueError`` if the masks disagree with the weights' zeros under rule ``check`` (see ``MASK_CHECKS``)."""
    if check not in MASK_CHECKS:
        raise ValueError(f"check={check!r} is not one of {MASK_CHECKS}")
    if check == "none":
        return
    bad = []
    for key, (unpruned, unkept) in mask_disagreements(state_dict).items():
        if unpruned or (check == "strict" and unkept):
            bad.append(f"{key}: {unpruned} nonzero weights under mask 0, {unkept} zero weights under mask 1")
    if bad:
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        raise ValueError(
            f"{where}: masks disagree with the weights' zeros in {len(bad)} tensors: {'; '.join(bad[:3])}{more}. "
            "A pruned checkpoint must have mask == (weight != 0) (docs/method.md §4.4); re-export it with "
            "pruning.save_pruned, or load with check='pruned' (kept zeros allowed) / check='none'."
        )


def load_masked_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, check: str = "strict") -> nn.Module:
    """Check the masks (``check_masks``), then attach them and load strictly (``models.checkpoints.load_into``).

    A corrupt checkpoint fails before anything is loaded; STYLE: never ``strict=False``.
    """
    state_dict = OrderedDict((_strip(k), v) for k, v in state_dict.items())
    check_masks(state_dict, check=check)
    load_into(getattr(model, "_orig_mod", model), state_dict)
    apply_masks(getattr(model, "_orig_mod", model))
    return model


def model_from_state_dict(state_dict: Mapping[str, torch.Tensor], *, arch: str | None = None, check: str = "strict") -> nn.Module:
    """Build the model whose keys and shapes match ``state_dict`` (``arch`` or inferred), load it masked; eval, CPU."""
    state_dict = read_state_dict(state_dict)
    if arch is None:
        arch, options = infer_architecture(state_dict)
    else:
        options = {"num_classes": int(state_dict["linear.weight"].shape[0])} if "linear.weight" in state_dict else {}
    model = build_model(arch, **options)
    return load_masked_state_dict(model, state_dict, check=check).eval()


def load_pruned(source: str | os.PathLike, *, arch: str | None = None, check: str = "strict") -> nn.Module:
    """A masked model from a released name (``micronet_v2_pr_15``) or a checkpoint path; eval mode, CPU.

    The masks are checked first (``check``); then ``models.checkpoints.load_checkpoint`` builds the model
    (its ``arch`` entry, ``arch=...``, or shapes) and loads it strictly.
    """
    check_masks(read_state_dict(source), check=check, where=str(source))
    return load_checkpoint(source, model=arch)


def save_pruned(
    model: nn.Module, path: str | os.PathLike, *, meta: Mapping[str, Any] | None = None, check: str = "strict"
) -> Path:
    """Write ``model``'s state_dict in the authors' layout (``.mask`` after each weight/bias), atomically.

    Masked weights are zeroed first and the result must satisfy ``mask == (weight ≠ 0)``
    (``check="strict"``; ``"pruned"`` tolerates kept weights that are exactly zero), so the scorer's density from exact zeros equals the mask density.
    ``meta`` (rate, source, …) goes to a ``<path>.json`` sidecar; the checkpoint stays a plain
    state_dict that ``torch.load`` + strict loading read like the released files.
    """
    base = getattr(model, "_orig_mod", model)
    apply_masks(base)
    state = OrderedDict((k, v.detach().cpu().clone()) for k, v in base.state_dict().items())
    check_masks(state, check=check, where=f"model to be saved at {path}")
    path = Path(path)
    atomic_torch_save(state, path)
    if meta is not None:
        atomic_write_json(path.with_name(path.name + ".json"), dict(meta))
    log.info("wrote pruned checkpoint %s (%d tensors)", path, len(state))
    return path
