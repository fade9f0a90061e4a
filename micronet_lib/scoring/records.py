"""What the tracer records, and the registry of element-wise op costs (docs/scoring.md §3.2, §4).

:class:`OpRecord` is one executed op, per example; a convention (``conventions.py``) charges it.
:func:`register_op_cost` defines ops the rules leave open; anything else fails loudly with
:class:`UnsupportedOpError`, never a silent zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Callable, Sequence

import torch
import torch.nn as nn

from micronet_lib.scoring.ops import ACTIVATION_COSTS

__all__ = ["OpRecord", "ParamStat", "UnsupportedOpError", "DataDependentError", "ModuleCost", "register_module",
           "register_op_cost", "param_stats", "how_to_register", "how_to_count", "register_call", "class_path", "ELEMENTWISE", "MODULE_COSTS", "FUNCTION_ALIASES"]


class UnsupportedOpError(ValueError):
    """An op the challenge rules do not cover and no cost was registered for."""


class DataDependentError(UnsupportedOpError):
    """The forward branched on tensor values (``if tensor``, ``.item()``, ``.long()``): no fixed op count."""


@dataclass(frozen=True)
class ParamStat:
    """Storage facts of one parameter tensor, read from the caller's model."""

    name: str
    numel: int
    nnz: int  # exact nonzeros (docs/scoring.md §5.1: density from exact zeros)
    mask_nnz: int | None  # ones in the module's ``mask`` buffer, if masked
    row_nnz: tuple[int, ...] = ()  # nonzeros per output channel (dim 0) of an ndim > 1 tensor: adder-tree sizes


@dataclass(frozen=True)
class OpRecord:
    """One executed op, per example (batch dimension dropped). Costs are assigned by a convention.

    ``kind`` is one of: conv, linear, avg_pool, max_pool, tensor_mul (SE scale / product of two
    activations), tensor_add (residual add), elementwise (activations and scalar arithmetic),
    upsample, module (a registered module with parameters, :func:`register_module`), free (BN folded,
    dropout, identity, format conversions).

    ``bn_follows``: a BatchNorm consumed this conv/linear's output (the bias policy ``"present"`` folds
    it into a bias); ``broadcast``: a tensor product whose operands differ in shape (an SE-style gate);
    ``params``: parameters stored by a registered module, or used directly as an operand of a product,
    sum or matmul (charged dense, at the layer's param width); ``stored``: a parameter declared through
    ``count(extra_params=)``; ``matmul``: a product of two tensors (``fan_in`` inner terms per output);
    ``softmax``: exp and divide per element, a sum per row of ``window`` elements.
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
    params: tuple[ParamStat, ...] = ()
    bn_follows: bool = False
    broadcast: bool = False
    owner: str = ""  # class name of the module whose forward ran this functional op
    owner_type: type | None = None  # that module's class (conventions match classes by identity, never by name)
    declared_bits: int | None = None  # a parameter declared through ``count(extra_params=)``: its own width
    terms: int = 0  # terms of one sum (matmul inner size, softmax row): sets the adder-tree depth
    bias_charged: bool = True  # set by the bias policy (report.py); True = every conv/FC has a (folded-BN) bias

    @property
    def n_out(self) -> int:
        return math.prod(self.out_shape)


# ------------------------------------------------------------------------------------------------
# Registered element-wise costs: canonical name -> (mults, adds) per output element.

ELEMENTWISE: dict[str, tuple[Fraction, Fraction]] = {k: (Fraction(m), Fraction(a)) for k, (m, a) in ACTIVATION_COSTS.items()}
FUNCTION_ALIASES: dict[str, str] = {"hardswish": "hswish", "silu": "swish", "relu6": "relu6", "relu": "relu",
                                     "sigmoid": "sigmoid", "hardsigmoid": "hardsigmoid"}


@dataclass(frozen=True)
class ModuleCost:
    """How a registered module type is charged: ``key`` names the op in the table; ``params`` the
    parameter names it stores (``None``: all of its parameters, recursively; ``()``: none);
    ``cost(module, in_shapes, out_shape) -> (mults, adds)`` per example, or fixed per-element counts."""

    key: str
    mults: Fraction
    adds: Fraction
    params: tuple[str, ...] | None
    cost: Callable | None = None
    op_cost: bool = False  # registered through register_op_cost: the class must have no parameters


MODULE_COSTS: dict[type, ModuleCost] = {}


def _count(value, field: str) -> Fraction:
    v = Fraction(str(value)) if isinstance(value, float) else Fraction(value)
    if v < 0:
        raise ValueError(f"{field}={value!r} must be >= 0")
    return v


def register_module(cls: type, *, mults: float | Fraction | int = 0, adds: float | Fraction | int = 0,
                    params: Sequence[str] | None = None, cost: Callable | None = None, name: str | None = None) -> None:
    """Declare how instances of ``cls`` (an ``nn.Module`` subclass, subclasses included) are charged.

    The module becomes one record; nothing inside its forward is traced. ``mults``/``adds`` are per
    output element, or ``cost(module, in_shapes, out_shape)`` returns per-example totals (shapes
    without the batch). ``params``: the parameter names the module stores for inference -- ``None``
    (default) means all of them; each is charged dense (numel values) at the layer's parameter width,
    and a multiply inside such a module costs max(param, activation width)/32. Built-in activations
    (ReLU, HSwish, ...) are registered through this same call. Example, a folded-BN per-channel scale::

        register_module(ChannelScale, mults=1, adds=1)          # y = x * weight + bias
        register_module(RoundQuant, mults=0, adds=0, params=()) # format conversion: free (docs/scoring.md §2.3)
    """
    import torch.nn as nn

    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"register_module: cls={cls!r} must be an nn.Module subclass")
    if cost is not None and not callable(cost):
        raise ValueError(f"register_module: cost={cost!r} must be callable(module, in_shapes, out_shape)")
    if params is not None and (isinstance(params, str) or not all(isinstance(p, str) for p in params)):
        raise ValueError(f"register_module: params={params!r} must be a sequence of parameter names or None")
    key = name or cls.__name__.lower()
    m, a = _count(mults, "mults"), _count(adds, "adds")
    MODULE_COSTS[cls] = ModuleCost(key, m, a, None if params is None else tuple(params), cost)
    if params is not None and not params and cost is None:
        ELEMENTWISE[key] = (m, a)


def register_op_cost(target: str | type, *, mults: float | Fraction, adds: float | Fraction, name: str | None = None) -> None:
    """Define the per-element cost of an element-wise op that the rules leave open.

    ``target`` is a function name as torch reports it (``"tanh"``, ``"gelu"``; in-place ``_`` suffix
    ignored) or a *parameter-free* ``nn.Module`` subclass (instances of it and its subclasses that keep its
    ``forward`` become one record). A class with parameters is refused: it needs :func:`register_module`,
    which stores them. The cost applies in every convention.
    Example: ``register_op_cost("tanh", mults=3, adds=1)``.
    """
    m, a = _count(mults, "mults"), _count(adds, "adds")
    if isinstance(target, str):
        bare = target if target.startswith("__") else target.rstrip("_")  # dunders keep their name, as traced
        if not bare or bare[0].isupper() or "." in bare:
            # A class name as a string matched nothing and used to be accepted (issue #31, case 1).
            found = sorted({class_path(c) for c in _module_classes() if c.__name__ == bare.rpartition(".")[2]})
            how = (f"pass the class itself: `{register_call(found[0], None)}`" if len(found) == 1 else
                   f"pass the class itself to micronet_lib.scoring.register_module (classes of that name: {found})")
            raise ValueError(f"register_op_cost({target!r}): {target!r} looks like a class name, not a torch function "
                             f"name; {how}")
        key = name or bare
        ELEMENTWISE[key] = (m, a)
        FUNCTION_ALIASES[bare] = key
    elif isinstance(target, type) and issubclass(target, nn.Module):
        try:  # a class that builds with default arguments shows its parameters now; others at trace time
            has_params = any(True for _ in target().parameters())
        except Exception:
            has_params = False
        if has_params:
            raise ValueError(f"register_op_cost({target.__name__}): it has parameters, which an op cost does not "
                             f"store; register it with `{register_call(target, True)}`")
        register_module(target, mults=m, adds=a, params=(), name=name)
        MODULE_COSTS[target] = replace(MODULE_COSTS[target], op_cost=True)
    else:
        raise ValueError(f"register_op_cost: target={target!r} must be a function name or an nn.Module subclass")


def _module_classes():
    """Every nn.Module subclass defined so far (to resolve a class given by name)."""
    seen, todo = set(), [nn.Module]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in seen:
                seen.add(sub)
                todo.append(sub)
    return seen


def class_path(cls: type | str) -> str:
    """``module.QualName`` of a class, the form an error message tells the user to pass."""
    if isinstance(cls, str):
        return cls
    return f"{cls.__module__}.{cls.__qualname__}"


def register_call(cls: type | str, has_params: bool | None) -> str:
    """The exact registration call for a module class (``...`` = per-output-element counts to fill in)."""
    if has_params is False:
        return f"micronet_lib.scoring.register_module({class_path(cls)}, mults=..., adds=..., params=())"
    return f"micronet_lib.scoring.register_module({class_path(cls)}, mults=..., adds=...)"


def how_to_register(op: str) -> str:
    """Advice for a parameter-free function without a cost: the exact call, in backquotes."""
    return (f"register its per-element cost with `micronet_lib.scoring.register_op_cost({op!r}, mults=..., adds=...)` "
            "(mults and adds per output element; docs/scoring.md 'Every op is costed or an error')")


def how_to_count(module: nn.Module | None, op: str) -> str:
    """Advice for an op without a cost, by the module it ran in: the exact call(s) that make it count.

    Inside a leaf module with parameters only ``register_module`` helps (an op cost would leave them
    unstored); inside a parameter-free leaf, registering the op or the whole module as one unit (e.g. a
    quantiser: round and clamp together) both work; elsewhere the op's cost."""
    if module is None or any(True for _ in module.children()):
        return how_to_register(op)
    if any(True for _ in module.parameters()):
        return (f"count the whole {type(module).__name__} as one unit, storing its parameters: "
                f"`{register_call(type(module), True)}` (mults and adds per output element)")
    return (f"{how_to_register(op)}; or count the whole {type(module).__name__} as one unit (e.g. a quantiser): "
            f"`{register_call(type(module), False)}`")


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
            rows = tuple(int(n) for n in torch.count_nonzero(p.reshape(p.shape[0], -1), dim=1)) if p.dim() > 1 else ()
            stats[name] = ParamStat(name, p.numel(), int(torch.count_nonzero(p)), mask_nnz, rows)
    return stats
