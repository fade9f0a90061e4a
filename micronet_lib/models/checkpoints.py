"""The authors' released checkpoints (docs/method.md §4) and any MicroNet checkpoint file, loaded strictly.

``load_released("micronet_v2_pr_60")`` fetches the file through the asset layer (sha256-checked), reads it
onto the CPU whatever device it was saved from (the files hold CUDA tensors, docs/method.md §4.2), builds the
right network, attaches a pruning mask to every module that has a ``<module>.mask`` entry (docs/method.md §4.4),
loads with ``strict=True`` and verifies that every weight is exactly zero where its mask is zero.

``load_checkpoint(path_or_name)`` does the same for arbitrary files: a plain state_dict, or a dict that
wraps it under ``"model"`` (our training checkpoints), optionally with ``"arch": {"name", "options"}``
naming the builder. Without ``arch`` the MicroNet version and class count are inferred from the shapes.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from micronet_lib.runstore import checksums
from micronet_lib.models.registry import build_model, list_models
from micronet_lib.models.masks import attach_mask, masked_modules
from micronet_lib import assets

__all__ = [
    "ReleasedCheckpoint",
    "RELEASED_CHECKPOINTS",
    "load_released",
    "load_checkpoint",
    "read_state_dict",
    "infer_architecture",
    "load_into",
    "verify_masks",
]

log = logging.getLogger(__name__)

MASK_SUFFIX = ".mask"
# Wrappers added by torch.compile / DataParallel; stripped explicitly (and logged), as nanoGPT does.
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")


@dataclass(frozen=True)
class ReleasedCheckpoint:
    """One released file (docs/method.md §4.1, §4.5): the builder it needs and what it should contain."""

    name: str
    model: str
    prune_percent: int
    nonzero_weights: int  # nnz over all ndim > 1 weights (docs/method.md §4.5)

    @property
    def filename(self) -> str:
        return f"{self.name}.t7"


RELEASED_CHECKPOINTS: dict[str, ReleasedCheckpoint] = {
    c.name: c
    for c in (
        ReleasedCheckpoint("micronet_v1_pr_60", "micronet_v1", 60, 180_182),
        ReleasedCheckpoint("micronet_v2_pr_15", "micronet_v2", 15, 400_506),
        ReleasedCheckpoint("micronet_v2_pr_30", "micronet_v2", 30, 329_829),
        ReleasedCheckpoint("micronet_v2_pr_45", "micronet_v2", 45, 259_151),
        ReleasedCheckpoint("micronet_v2_pr_60", "micronet_v2", 60, 188_474),
    )
}

# Architectures ``infer_architecture`` tries on a bare state_dict, in order.
_INFERABLE = ("micronet_v1", "micronet_v2")


def _released(name: str) -> ReleasedCheckpoint:
    try:
        return RELEASED_CHECKPOINTS[name]
    except KeyError:
        raise ValueError(
            f"unknown released checkpoint {name!r}; known: {', '.join(RELEASED_CHECKPOINTS)}"
        ) from None


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state_dict, meta)`` from a checkpoint file, on the CPU; ``meta`` holds a wrapper's other entries.

    Accepts a plain state_dict (the authors' format, docs/method.md §4.2) or ``{"model": state_dict, ...}``.
    Loading uses ``weights_only=True``: a file needing arbitrary pickled objects is rejected.
    """
    path = Path(path)
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.pt"))
        raise ValueError(f"checkpoint {str(path)!r} is a folder, not a checkpoint file; name a file in it"
                         + (f" ({', '.join(found[:4])})" if found else "") + f", e.g. {path / 'best.pt'}")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist (give a file path or one of: {', '.join(RELEASED_CHECKPOINTS)})")
    obj = checksums.torch_load(path)
    meta: dict[str, Any] = {}
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        meta = {k: v for k, v in obj.items() if k != "model"}
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        kind = type(obj).__name__
        raise ValueError(
            f"{path.name} holds a {kind}, not a state_dict of tensors (nor a dict with one under 'model')"
        )
    state = {}
    for key, value in obj.items():
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
        state[key] = value
    if set(state) != set(obj):
        log.info("%s: stripped wrapper prefixes %s from the keys", path.name, _WRAPPER_PREFIXES)
    return state, meta


def _shapes(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items() if not k.endswith(MASK_SUFFIX)}


def _mismatch(expected: Mapping[str, tuple], found: Mapping[str, tuple]) -> str | None:
    """First difference between two key→shape maps, as a short phrase; ``None`` if they agree."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    if missing:
        return f"{len(missing)} missing key(s), e.g. {missing[0]!r}"
    if unexpected:
        return f"{len(unexpected)} unexpected key(s), e.g. {unexpected[0]!r}"
    for key, shape in expected.items():
        if found[key] != shape:
            return f"{key!r} has shape {list(found[key])}, expected {list(shape)}"
    return None


def _classifier_weight(state: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
    """The classifier weight: ``linear.weight`` (MicroNet), else the last 2-D ``*.weight`` in the file."""
    if "linear.weight" in state:
        return state["linear.weight"]
    candidates = [v for k, v in state.items() if k.endswith(".weight") and v.ndim == 2]
    return candidates[-1] if candidates else None


def infer_architecture(state: Mapping[str, torch.Tensor], *, num_classes: int | None = None) -> tuple[str, dict[str, Any]]:
    """``(model_name, options)`` whose state_dict has exactly the keys and shapes of ``state``.

    The class count comes from ``linear.weight``; ``num_classes`` (if given) must agree with it.
    """
    classifier = state.get("linear.weight")
    if classifier is None or classifier.ndim != 2 or "layers.0.conv1.weight" not in state:
        sample = ", ".join(list(state)[:3])
        raise ValueError(
            f"not a MicroNet checkpoint: no 'linear.weight' / 'layers.0.conv1.weight' (keys start {sample}); "
            f"pass model=NAME for other architectures ({', '.join(list_models())})"
        )
    found_classes = int(classifier.shape[0])
    if num_classes is not None and num_classes != found_classes:
        raise ValueError(
            f"checkpoint has {found_classes} classes (linear.weight is {list(classifier.shape)}) "
            f"but num_classes={num_classes} was requested"
        )
    found = _shapes(state)
    reasons = []
    for name in _INFERABLE:
        reference = build_model(name, num_classes=found_classes)
        why = _mismatch(_shapes(reference.state_dict()), found)
        if why is None:
            return name, {"num_classes": found_classes}
        reasons.append(f"{name}: {why}")
    raise ValueError(f"checkpoint matches no MicroNet at width/depth 1.0 ({'; '.join(reasons)}); save it with an 'arch' entry")


@torch.no_grad()
def verify_masks(model: nn.Module) -> int:
    """Check every mask is 0/1 and every weight is exactly 0 where its mask is 0; return the masked count."""
    count = 0
    for name, module in masked_modules(model):
        mask = module.mask
        if not torch.all((mask == 0) | (mask == 1)):
            raise ValueError(f"mask of {name!r} holds values other than 0 and 1")
        leaked = int(torch.count_nonzero(module.weight[mask == 0]))
        if leaked:
            raise ValueError(f"{name}.weight has {leaked} nonzero entries where its mask is 0 (corrupt or inconsistent checkpoint)")
        count += 1
    return count


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str = "checkpoint") -> nn.Module:
    """Attach masks for every ``<module>.mask`` key, load ``state`` strictly, verify the masks."""
    for key, mask in state.items():
        if not key.endswith(MASK_SUFFIX):
            continue
        module_name = key[: -len(MASK_SUFFIX)]
        try:
            module = model.get_submodule(module_name)
        except AttributeError:
            raise ValueError(f"{source}: mask {key!r} belongs to no module of {type(model).__name__}") from None
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor) or tuple(weight.shape) != tuple(mask.shape):
            raise ValueError(f"{source}: mask {key!r} has shape {list(mask.shape)}, which does not fit {module_name}.weight")
        attach_mask(module, mask)
    why = _mismatch(_shapes(model.state_dict()), _shapes(state))
    if why is not None:
        raise ValueError(f"{source} does not fit {type(model).__name__}: {why}")
    model.load_state_dict(state, strict=True)
    n = verify_masks(model)
    log.debug("%s: loaded %d tensors, %d masked modules", source, len(state), n)
    return model


def load_checkpoint(
    path_or_name: str | os.PathLike,
    *,
    num_classes: int | None = None,
    model: str | None = None,
    model_options: Mapping[str, Any] | None = None,
) -> nn.Module:
    """A model (CPU, eval mode, masks attached) from a released name or a checkpoint file.

    The architecture is, in order: ``model``/``model_options`` if given; the file's ``arch`` entry
    (``{"name": ..., "options": {...}}``); else inferred from the shapes (MicroNet ver1/ver2).
    """
    key = os.fspath(path_or_name)
    if key in RELEASED_CHECKPOINTS:
        entry = RELEASED_CHECKPOINTS[key]
        if model is not None and model != entry.model:
            raise ValueError(f"{key} is a {entry.model} checkpoint, not a {model}")
        return load_released(key, num_classes=num_classes)
    state, meta = read_state_dict(key)
    source = Path(key).name
    arch = meta.get("arch") if isinstance(meta.get("arch"), Mapping) else None
    if model is not None:
        name, options = model, dict(model_options or {})
        classifier = _classifier_weight(state)
        if "num_classes" not in options and num_classes is None and classifier is not None:
            options["num_classes"] = int(classifier.shape[0])  # the file knows its class count
    elif arch is not None and "name" in arch:
        name, options = str(arch["name"]), dict(arch.get("options") or {})
    else:
        name, options = infer_architecture(state, num_classes=num_classes)
    if num_classes is not None:
        found = _classifier_weight(state)
        if found is not None and found.shape[0] != num_classes:
            raise ValueError(f"{source} has {found.shape[0]} classes but num_classes={num_classes} was requested")
        options.setdefault("num_classes", num_classes)
    net = build_model(name, **options)
    load_into(net, state, source=source)
    return net.eval()


def load_released(name: str, *, num_classes: int | None = None) -> nn.Module:
    """One of the authors' checkpoints (docs/method.md §4.1) as a masked model on the CPU, in eval mode."""
    entry = _released(name)
    if num_classes is not None and num_classes != 100:
        raise ValueError(f"{name} is a CIFAR-100 checkpoint with 100 classes, but num_classes={num_classes} was requested")

    path = assets.fetch(entry.filename)
    state, meta = read_state_dict(path)
    if meta:
        raise ValueError(f"{entry.filename} should be a plain state_dict (docs/method.md §4.2) but wraps one with {sorted(meta)}")
    net = build_model(entry.model, num_classes=100)
    load_into(net, state, source=entry.filename)
    return net.eval()
