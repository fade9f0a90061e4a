"""Pruning masks as buffers named like the authors' (``<module>.mask`` beside ``<module>.weight``).

A masked module keeps a 0/1 float buffer ``mask`` of its weight's shape, so released checkpoints
(docs/method.md §4.3–4.4) load strictly. The authors overwrite the weight with weight ⊙ mask in place
before every forward (docs/method.md §8.1); we do the same with a forward pre-hook, so masked entries are
exactly zero whenever the module runs, whatever touched the weight in between.
"""

from __future__ import annotations

from typing import Iterator

import torch
import torch.nn as nn

__all__ = [
    "attach_mask",
    "has_mask",
    "masked_modules",
    "apply_masks",
    "mask_state",
    "MaskedOptimizerHook",
    "keep_masked",
]

_HOOK_ATTR = "_micronet_mask_hook"


def _apply_mask_hook(module: nn.Module, _inputs) -> None:
    with torch.no_grad():
        module.weight.mul_(module.mask)



def attach_mask(module: nn.Module, mask: torch.Tensor | None = None) -> nn.Module:
    """Give ``module`` (anything with a ``weight``) a ``mask`` buffer and zero the masked weights.

    ``mask=None`` attaches an all-ones mask (nothing pruned yet). Re-attaching replaces the mask.
    """
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{type(module).__name__} has no weight tensor to mask")
    if mask is None:
        mask = torch.ones_like(weight)
    if tuple(mask.shape) != tuple(weight.shape):
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match weight shape {tuple(weight.shape)}")
    mask = mask.detach().to(device=weight.device, dtype=weight.dtype)
    if has_mask(module):
        module.mask.copy_(mask)
    else:
        module.register_buffer("mask", mask.clone())
        setattr(module, _HOOK_ATTR, module.register_forward_pre_hook(_apply_mask_hook))
    _apply_mask_hook(module, ())
    return module


def has_mask(module: nn.Module) -> bool:
    return isinstance(getattr(module, "mask", None), torch.Tensor) and hasattr(module, _HOOK_ATTR)


def masked_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """``(name, module)`` for every masked module, in ``named_modules`` order."""
    for name, module in model.named_modules():
        if has_mask(module):
            yield name, module


@torch.no_grad()
def apply_masks(model: nn.Module) -> None:
    """Zero every masked weight now (after an optimiser step, before saving or evaluating)."""
    for _, module in masked_modules(model):
        module.weight.mul_(module.mask)


def mask_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{"<module>.mask": mask}`` for every masked module (the authors' key names)."""
    return {f"{name}.mask": module.mask for name, module in masked_modules(model)}


class MaskedOptimizerHook:
    """Callable for ``optimizer.register_step_post_hook``: re-zero masked weights after every step.

    The forward pre-hook only zeroes weights when a module runs; after ``optimizer.step()`` momentum and
    weight decay leave pruned entries nonzero until the next forward (docs/method.md §8.1). Checkpoints,
    evaluation and the scorer must never see them, so this hook zeroes them right after each step.
    Masks attached after the hook was registered (a new pruning cycle) are covered too, because the
    masked modules are looked up at every call.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __call__(self, _optimizer, _args, _kwargs) -> None:
        apply_masks(self.model)


def keep_masked(optimizer: torch.optim.Optimizer, model: nn.Module):
    """Register a :class:`MaskedOptimizerHook` on ``optimizer``; returns the removable handle."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"keep_masked needs a torch.optim.Optimizer, got {type(optimizer).__name__}")
    return optimizer.register_step_post_hook(MaskedOptimizerHook(model))
