"""What the tracer records, and the registry of element-wise op costs (docs/scoring.md §3.2, §4).

:class:`OpRecord` is one executed op, per example; a convention (``conventions.py``) charges it.
:func:`register_op_cost` defines ops the rules leave open; anything else fails loudly with
:class:`UnsupportedOpError`, never a silent zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import torch
import torch.nn as nn

from micronet_lib.scoring.ops import ACTIVATION_COSTS

__all__ = ["OpRecord", "ParamStat", "UnsupportedOpError", "register_op_cost", "param_stats", "how_to_register",
           "ELEMENTWISE", "MODULE_COSTS", "FUNCTION_ALIASES"]


class UnsupportedOpError(ValueError):
    """An op the challenge rules do not cover and no cost was registered for."""


@dataclass(frozen=True)
class ParamStat:
    """Storage facts of one parameter tensor, read from the caller's model."""

    name: str
    numel: int
    nnz: int  # exact nonzeros (docs/scoring.md §5.1: density from exact zeros)
    mask_nnz: int | None  # ones in the module's ``mask`` buffer, if masked


@dataclass(frozen=True)
class OpRecord:
    """One executed op, per example (batch dimension dropped). Costs are assigned by a convention.

    ``kind`` is one of: conv, linear, avg_pool, max_pool, tensor_mul (SE scale / product of two
    activations), tensor_add (residual add), elementwise (activations and scalar arithmetic),
    upsample, free (BN folded, dropout, identity).
    """

    path: str
    kind: str
    op: str
    out_shape: tuple[int, ...]
    weight: ParamStat | None = None
    bias: ParamStat | None = None
    fan_in: int = 0  # weights per output element: k²·C_in/groups (conv), C_in (linear)
    out_channels: int = 0
    window: int = 0  # inputs per output element (pools)
    mults_per_element: Fraction = Fraction(0)
    adds_per_element: Fraction = Fraction(0)
    owns_params: bool = True  # False when a shared weight was already charged by an earlier record
    note: str = ""

    @property
    def n_out(self) -> int:
        return math.prod(self.out_shape)


# ------------------------------------------------------------------------------------------------
# Registered element-wise costs: canonical name -> (mults, adds) per output element.

ELEMENTWISE: dict[str, tuple[Fraction, Fraction]] = {k: (Fraction(m), Fraction(a)) for k, (m, a) in ACTIVATION_COSTS.items()}
MODULE_COSTS: dict[type, str] = {}
FUNCTION_ALIASES: dict[str, str] = {"hardswish": "hswish", "silu": "swish", "relu6": "relu6", "relu": "relu",
                                     "sigmoid": "sigmoid", "hardsigmoid": "hardsigmoid"}


def register_op_cost(target: str | type, *, mults: float | Fraction, adds: float | Fraction, name: str | None = None) -> None:
    """Define the per-element cost of an element-wise op that the rules leave open.

    ``target`` is a function name as torch reports it (``"tanh"``, ``"gelu"``; in-place ``_`` suffix
    ignored) or an ``nn.Module`` subclass (instances of it and its subclasses become one record).
    The cost applies in every convention. Example: ``register_op_cost("tanh", mults=3, adds=1)``.
    """
    m, a = Fraction(str(mults)) if isinstance(mults, float) else Fraction(mults), Fraction(str(adds)) if isinstance(adds, float) else Fraction(adds)
    if m < 0 or a < 0:
        raise ValueError(f"register_op_cost: mults={mults!r}, adds={adds!r} must be >= 0")
    if isinstance(target, str):
        key = name or target.rstrip("_")
        ELEMENTWISE[key] = (m, a)
        FUNCTION_ALIASES[target.rstrip("_")] = key
    elif isinstance(target, type) and issubclass(target, nn.Module):
        key = name or target.__name__.lower()
        ELEMENTWISE[key] = (m, a)
        MODULE_COSTS[target] = key
    else:
        raise ValueError(f"register_op_cost: target={target!r} must be a function name or an nn.Module subclass")


def how_to_register(op: str) -> str:
    return (f"register its per-element cost with micronet_lib.scoring.register_op_cost({op!r}, mults=..., adds=...), "
            "or, for an op with parameters, add a handler to a convention (micronet_lib.scoring.register_convention)")


# ------------------------------------------------------------------------------------------------

def param_stats(model: nn.Module) -> dict[str, ParamStat]:
    """Numel, exact nonzeros and mask ones of every parameter of ``model`` (read-only)."""
    owners = {}
    for mname, module in model.named_modules():
        for pname, _ in module.named_parameters(recurse=False):
            owners[f"{mname}.{pname}" if mname else pname] = (module, pname)
    stats = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            module, pname = owners[name]
            mask = getattr(module, "mask", None)
            mask_nnz = None
            if pname == "weight" and isinstance(mask, torch.Tensor) and mask.shape == p.shape:
                mask_nnz = int(torch.count_nonzero(mask))
            stats[name] = ParamStat(name, p.numel(), int(torch.count_nonzero(p)), mask_nnz)
    return stats
