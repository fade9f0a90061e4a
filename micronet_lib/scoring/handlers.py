"""Per-op record builders: known module types (isinstance, so masked subclasses count) and functional ops.

Each handler receives the tracer (``stat``, ``claim``, ``add``, ``where``, ``describe_where``,
``batch``) and appends ``OpRecord`` rows. Costs are not decided here: see ``conventions.py``.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Callable

import torch
import torch.nn as nn

from micronet_lib.scoring import attention
from micronet_lib.scoring.ops import ACTIVATION_COSTS
from micronet_lib.scoring.records import (
    ELEMENTWISE, FUNCTION_ALIASES, MODULE_COSTS, DataDependentError, ModuleCost, OpRecord, UnsupportedOpError,
    how_to_count, how_to_register, register_call, register_module,
)
from micronet_lib.models.blocks import HSwish

__all__ = ["module_handler", "computes_like", "functional", "FREE_FUNCTIONS", "shape_of", "first_tensor", "data_dependent", "EXIT_HINT"]


def shape_of(t) -> tuple[int, ...]:
    return tuple(int(s) for s in t.shape[1:])


def first_tensor(x):
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (tuple, list)):
        for item in x:
            t = first_tensor(item)
            if t is not None:
                return t
    return None


# ------------------------------------------------------------------------------------------------
# Module handlers

def _conv_module(rec, path, m: nn.Conv2d, inputs, out_shape):
    w, b = rec.stat(m.weight), rec.stat(m.bias)
    if w is None:
        raise UnsupportedOpError(f"conv {path!r}: its weight is not a parameter of the model")
    fresh = rec.claim(w, b)
    k = "x".join(str(s) for s in m.kernel_size)
    s = m.stride[0]
    depthwise = m.groups > 1 and m.groups == m.in_channels == m.out_channels
    label = f"{'DepthwiseConv2d' if depthwise else 'Conv2d'} {k}/s{s} {m.in_channels}->{m.out_channels}"
    if m.groups > 1 and not depthwise:
        label += f" g{m.groups}"
    rec.add(OpRecord(path, "conv", label, out_shape, weight=w, bias=b, fan_in=w.numel // m.out_channels,
                     out_channels=m.out_channels, owns_params=fresh))


def _linear_module(rec, path, m: nn.Linear, inputs, out_shape):
    w, b = rec.stat(m.weight), rec.stat(m.bias)
    if w is None:
        raise UnsupportedOpError(f"linear {path!r}: its weight is not a parameter of the model")
    fresh = rec.claim(w, b)
    rec.add(OpRecord(path, "linear", f"Linear {m.in_features}->{m.out_features}", out_shape, weight=w, bias=b,
                     fan_in=m.in_features, out_channels=m.out_features, owns_params=fresh))


def _bn_module(rec, path, m, inputs, out_shape):
    stats = tuple(s for s in (rec.stat(getattr(m, "weight", None)), rec.stat(getattr(m, "bias", None))) if s is not None)
    fresh = rec.claim(*stats) if stats else True
    rec.add(OpRecord(path, "free", type(m).__name__, out_shape, params=stats, owns_params=fresh,
                     note="BN folded into the conv bias (docs/scoring.md §4)"))


def _free_module(rec, path, m, inputs, out_shape):
    rec.add(OpRecord(path, "free", type(m).__name__, out_shape, note="free at inference"))


def _elementwise(rec, path, key: str, label: str, out_shape, note=""):
    m, a = ELEMENTWISE[key]
    rec.add(OpRecord(path, "elementwise", label, out_shape, mults_per_element=m, adds_per_element=a, note=note))


def _registered_module(mc: ModuleCost):
    """A :func:`register_module` type: one record; its declared parameters are stored (dense)."""

    def handler(rec, path, m, inputs, out_shape):
        if mc.op_cost and any(True for _ in m.parameters()):
            names = [n for n, _ in m.named_parameters()]
            raise UnsupportedOpError(
                f"{type(m).__name__} at {path!r} was registered with register_op_cost, which stores no parameters, "
                f"but it has {names[:4]}; register it with `{register_call(type(m), True)}`")
        if mc.params is None:
            named = list(m.named_parameters())
        else:
            missing = [n for n in mc.params if not isinstance(getattr(m, n, None), torch.Tensor)]
            if missing:
                raise UnsupportedOpError(f"{type(m).__name__} at {path!r} was registered with params={mc.params!r}, "
                                         f"but has no tensor attribute(s) {missing}")
            named = [(n, getattr(m, n)) for n in mc.params]
        stats = tuple(s for s in (rec.stat(p) for _, p in named) if s is not None)
        fresh = rec.claim(*stats) if stats else True
        for _, p in m.named_parameters():  # parameters not declared are not stored, by the user's word
            rec.claim(rec.stat(p))
        n_out = math.prod(out_shape)
        if mc.cost is not None:
            mults, adds = mc.cost(m, [tuple(s[1:]) for s in inputs], tuple(out_shape))
            per = (Fraction(mults) / n_out, Fraction(adds) / n_out) if n_out else (Fraction(0), Fraction(0))
        else:
            per = (mc.mults, mc.adds)
        if not stats and mc.cost is None:
            _elementwise(rec, path, mc.key, mc.key, out_shape)
            return
        rec.add(OpRecord(path, "module", mc.key, out_shape, params=stats, mults_per_element=per[0],
                         adds_per_element=per[1], owns_params=fresh, note="registered module"))
    return handler


def _hardtanh_module(rec, path, m: nn.Hardtanh, inputs, out_shape):
    # clamp(x, lo, hi): two comparisons counted as mults, like ReLU6 = clamp(x, 0, 6) (docs/scoring.md §4).
    _elementwise(rec, path, "relu6", "relu6" if (m.min_val, m.max_val) == (0.0, 6.0) else "hardtanh (clamp)", out_shape)


def _pool_window(in_shape, out_shape, path, op, module=None) -> int:
    (c, h, w), (_, oh, ow) = in_shape[-3:], out_shape[-3:]
    if h % oh or w % ow:
        how = how_to_register(op) if module is None else f"declare its cost with `{register_call(type(module), False)}`"
        raise UnsupportedOpError(f"{op} in {path!r}: {h}x{w} -> {oh}x{ow} has unequal windows; {how}")
    return (h // oh) * (w // ow)


def _avgpool_module(rec, path, m, inputs, out_shape):
    if isinstance(m, nn.AvgPool2d):
        k = m.kernel_size if isinstance(m.kernel_size, int) else math.prod(m.kernel_size)
        window = k * k if isinstance(m.kernel_size, int) else k
    else:
        window = _pool_window(inputs[0][1:], out_shape, path, "adaptive_avg_pool2d", m)
    label = "GlobalAvgPool" if out_shape[-2:] == (1, 1) and window == math.prod(inputs[0][-2:]) else "AvgPool"
    rec.add(OpRecord(path, "avg_pool", f"{label} {window}->1", out_shape, window=window))


def _maxpool_module(rec, path, m, inputs, out_shape):
    if isinstance(m, nn.MaxPool2d):
        window = m.kernel_size ** 2 if isinstance(m.kernel_size, int) else math.prod(m.kernel_size)
    else:
        window = _pool_window(inputs[0][1:], out_shape, path, "adaptive_max_pool2d", m)
    rec.add(OpRecord(path, "max_pool", f"MaxPool {window}->1", out_shape, window=window,
                     note="comparisons counted as mults (docs/scoring.md §4)"))


def _upsample_module(rec, path, m: nn.Upsample, inputs, out_shape):
    if m.mode != "nearest":
        key = f"upsample_{m.mode}"
        if key not in ELEMENTWISE:
            raise UnsupportedOpError(f"unsupported op 'upsample({m.mode})' in {path!r}; {how_to_register(key)}")
        _elementwise(rec, path, key, key, out_shape)
        return
    rec.add(OpRecord(path, "upsample", "Upsample nearest", out_shape, note="1 mult per output element (docs/scoring.md §4)"))


def _base_module_handlers() -> dict[type, Callable]:
    handlers: dict[type, Callable] = {
        nn.Conv2d: _conv_module,
        nn.Linear: _linear_module,
        nn.modules.batchnorm._BatchNorm: _bn_module,
        nn.Dropout: _free_module, nn.Dropout1d: _free_module, nn.Dropout2d: _free_module, nn.Dropout3d: _free_module,
        nn.AlphaDropout: _free_module, nn.FeatureAlphaDropout: _free_module,
        nn.Identity: _free_module, nn.Flatten: _free_module,
        nn.Hardtanh: _hardtanh_module,
        nn.AdaptiveAvgPool2d: _avgpool_module, nn.AvgPool2d: _avgpool_module,
        nn.AdaptiveMaxPool2d: _maxpool_module, nn.MaxPool2d: _maxpool_module,
        nn.Upsample: _upsample_module,
        nn.MultiheadAttention: attention.mha_module,
    }
    return handlers


def _register_builtin_activations() -> None:
    """Parameter-free activation modules go through the public :func:`register_module`, like a user's."""
    # HSwish: the project's own hard-swish module (docs/method.md §3.1): 4 mults + 1 add, like nn.Hardswish
    table = {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.Hardswish: "hswish", nn.Hardsigmoid: "hardsigmoid",
             nn.Sigmoid: "sigmoid", nn.SiLU: "swish", HSwish: "hswish"}
    for cls, key in table.items():
        if cls not in MODULE_COSTS:  # a user's earlier registration wins
            m, a = ACTIVATION_COSTS[key]
            register_module(cls, mults=m, adds=a, params=(), name=key)


_HANDLERS_CACHE: dict[type, Callable] | None = None
# Methods a subclass may redefine and still compute what its base computes (construction, printing,
# checkpoint loading). Any other override -- ``forward``, ``_conv_forward``, ... -- may change the math.
_SAFE_OVERRIDES = frozenset({"__init__", "extra_repr", "reset_parameters", "reset_running_stats", "__repr__",
                             "__setstate__", "_load_from_state_dict", "_save_to_state_dict", "_check_input_dim",
                             "__annotations__", "__doc__", "__module__", "__qualname__", "__dict__", "__weakref__"})


def computes_like(cls: type, base: type) -> bool:
    """True if instances of ``cls`` compute what ``base`` computes: no class between them redefines a method
    of ``base`` other than construction and printing (a masked conv subclass does; a conv with a fused
    activation in ``forward`` does not, so it is traced through instead of counted as a plain conv)."""
    for c in cls.__mro__:
        if c is base:
            return True
        for name, value in vars(c).items():
            if name not in _SAFE_OVERRIDES and hasattr(base, name) and (
                    callable(value) or isinstance(value, (staticmethod, classmethod, property))):
                return False
    return True


def module_handler(module: nn.Module):
    """The record builder of ``module``'s class, matched by identity, or of the nearest handled base class
    when the subclass :func:`computes_like` it; ``None`` means: trace through its ``forward``."""
    global _HANDLERS_CACHE
    if _HANDLERS_CACHE is None:
        _register_builtin_activations()
        _HANDLERS_CACHE = _base_module_handlers()
    cls = type(module)
    for base in cls.__mro__:
        if base in MODULE_COSTS:
            handler = _registered_module(MODULE_COSTS[base])
        elif base in _HANDLERS_CACHE:
            handler = _HANDLERS_CACHE[base]
        else:
            continue
        return handler if computes_like(cls, base) else None
    return None


# ------------------------------------------------------------------------------------------------
# Functional ops (outside known modules)

FREE_FUNCTIONS = frozenset("""
__get__ __getitem__ __setitem__ view view_as reshape reshape_as flatten unflatten squeeze unsqueeze contiguous
to cpu cuda float double half bfloat16 type type_as detach clone expand expand_as permute transpose t cat
concat concatenate stack chunk split narrow select dropout dropout1d dropout2d dropout3d alpha_dropout
feature_alpha_dropout identity zeros ones empty full zeros_like ones_like empty_like full_like arange tensor
as_tensor requires_grad_ new_zeros new_ones new_empty new_full new_tensor unbind movedim moveaxis swapaxes swapdims
tensor_split split_with_sizes
""".split())
# Format conversions between formats FP32 represents exactly are free (docs/scoring.md §2.3): fake quantisation.
_CONVERSIONS = frozenset({"fake_quantize_per_tensor_affine", "fake_quantize_per_channel_affine",
                          "_fake_quantize_learnable_per_tensor_affine", "_fake_quantize_learnable_per_channel_affine"})
# Ops whose result only makes sense to branch on: the op count would depend on the data.
_INT_CASTS = frozenset({"long", "int", "bool", "short", "byte", "char"})
_DATA_DEPENDENT = _INT_CASTS | {"__bool__", "item", "tolist", "__int__", "__float__", "__index__", "numpy", "nonzero",
                                "argwhere", "masked_select", "unique"}
EXIT_HINT = ("the op count cannot depend on the data. For an early-exit network, let the forward run the trunk "
             "and every exit branch while it is counted (a flag on the model), and pass "
             "exit_rates={'<exit branch module path>': <fraction of examples that stop there>} to "
             "micronet_lib.scoring.count (measure_exit_rates computes them on a batch)")


def data_dependent(rec, raw_name: str) -> None:
    """Raise :class:`DataDependentError` naming the op and what to declare (called before any tensor check)."""
    what = {"__bool__": "an `if` on a tensor (Tensor.__bool__)"}.get(raw_name, f"Tensor.{raw_name}()")
    raise DataDependentError(f"data-dependent control flow: {what} in {rec.describe_where()}; {EXIT_HINT}")


# Comparisons (and min/max, clamps) are counted as multiplications, one per comparison (docs/scoring.md §4).
_COMPARISONS = frozenset("""
gt lt ge le eq ne greater less greater_equal less_equal not_equal __gt__ __lt__ __ge__ __le__ __eq__ __ne__
maximum minimum fmax fmin clamp_min clamp_max
""".split())
_CLAMPS = frozenset({"clamp", "clip"})

_ADD_NAMES = {"add", "__add__", "__radd__", "__iadd__", "sub", "__sub__", "__rsub__", "__isub__", "rsub", "subtract"}
_MUL_NAMES = {"mul", "__mul__", "__rmul__", "__imul__", "multiply", "div", "__truediv__", "__rtruediv__",
              "__itruediv__", "true_divide", "divide"}


def _is_activation_tensor(x) -> bool:
    return isinstance(x, torch.Tensor) and x.numel() > 1


def _operand_params(rec, args) -> tuple:
    """Parameters (or views of them) used directly as operands: stored dense by the op that uses them."""
    return tuple(s for s in (rec.stat(a) for a in args[:2] if isinstance(a, torch.Tensor)) if s is not None)


def functional(rec, raw_name: str, args, kwargs, out: torch.Tensor) -> None:
    name = raw_name.rstrip("_") if not raw_name.startswith("__") else raw_name
    if name in FREE_FUNCTIONS or raw_name in FREE_FUNCTIONS:
        return
    path = rec.where()
    idx = rec.fn_counter.get(f"{path}:{name}", 0)
    rec.fn_counter[f"{path}:{name}"] = idx + 1
    fpath = f"{path}:{name}" + (f"#{idx}" if idx else "")
    owner = rec.stack[-1].module if rec.stack else None
    shape = shape_of(out) if out.dim() else ()
    if name in FUNCTION_ALIASES and FUNCTION_ALIASES[name] in ELEMENTWISE:  # a registered cost wins
        key = FUNCTION_ALIASES[name]
        _elementwise(rec, fpath, key, key, shape)
        return
    if out.dim() == 0 or out.shape[0] != rec.batch:
        raise UnsupportedOpError(
            f"unsupported op {raw_name!r} in {rec.describe_where()}: it does not act on the batch "
            f"(output shape {tuple(out.shape)}), so its per-example cost is undefined. If it feeds a decision "
            f"(e.g. how many examples exit early), {EXIT_HINT}; otherwise {how_to_count(rec.stack[-1].module if rec.stack else None, name)}")
    if name in _CONVERSIONS:
        rec.add(OpRecord(fpath, "free", name, shape, note="format conversion FP32 represents exactly: free (docs/scoring.md §2.3)"))
        return
    if name in attention.FUNCTIONS:
        attention.functional(rec, fpath, name, args, kwargs, out, _operand_params(rec, args))
        return
    if name in _ADD_NAMES or name in _MUL_NAMES:
        params = _operand_params(rec, args)
        fresh = rec.claim(*params) if params else True
        tensors = [a for a in args[:2] if _is_activation_tensor(a)]
        is_add = name in _ADD_NAMES
        if len(tensors) >= 2:
            kind = "tensor_add" if is_add else "tensor_mul"
            broadcast = tensors[0].shape != tensors[1].shape
            label = ("add" if is_add else ("scale" if broadcast else "mul")) + f" ({raw_name})"
            rec.add(OpRecord(fpath, kind, label, shape, broadcast=broadcast, owner=type(owner).__name__ if owner else "",
                             owner_type=type(owner) if owner is not None else None, params=params, owns_params=fresh))
        else:
            m, a = (Fraction(0), Fraction(1)) if is_add else (Fraction(1), Fraction(0))
            rec.add(OpRecord(fpath, "elementwise", f"{raw_name} scalar", shape, mults_per_element=m, adds_per_element=a,
                             params=params, owns_params=fresh))
        return
    binary_minmax = name in ("max", "min") and len(args) > 1 and isinstance(args[1], torch.Tensor)
    if name in _COMPARISONS or name in _CLAMPS or binary_minmax:
        bounds = 1
        if name in _CLAMPS:  # one comparison per bound given
            lo = args[1] if len(args) > 1 else kwargs.get("min")
            hi = args[2] if len(args) > 2 else kwargs.get("max")
            bounds = (lo is not None) + (hi is not None)
        rec.add(OpRecord(fpath, "elementwise", f"{name} (compare)", shape, mults_per_element=Fraction(bounds),
                         note="comparisons counted as mults (docs/scoring.md §4)"))
        return
    if name in ("amax", "amin") or (name in ("max", "min") and (len(args) > 1 or "dim" in kwargs)):
        dims = args[1] if len(args) > 1 else kwargs.get("dim")
        dims = (dims,) if isinstance(dims, int) else tuple(dims)
        window = math.prod(int(args[0].shape[d]) for d in dims)
        rec.add(OpRecord(fpath, "max_pool", f"{name} {window}->1", shape, window=window))
        return
    if name == "hardtanh":  # clamp(x, lo, hi): two comparisons, like relu6 (docs/scoring.md §4)
        _elementwise(rec, fpath, "relu6", "relu6" if args[1:3] in ((0.0, 6.0), (0, 6)) else "hardtanh (clamp)", shape)
        return
    if name == "mean":
        inp = args[0]
        dims = args[1] if len(args) > 1 else kwargs.get("dim")
        if dims is None:
            window = inp[0].numel()
        else:
            dims = (dims,) if isinstance(dims, int) else tuple(dims)
            window = math.prod(int(inp.shape[d]) for d in dims)
        rec.add(OpRecord(fpath, "avg_pool", f"mean {window}->1", shape, window=window))
        return
    if name in ("adaptive_avg_pool2d", "avg_pool2d", "adaptive_max_pool2d", "max_pool2d"):
        inp = args[0]
        window = _pool_window(shape_of(inp), shape, fpath, name)
        kind = "avg_pool" if "avg" in name else "max_pool"
        rec.add(OpRecord(fpath, kind, f"{name} {window}->1", shape, window=window))
        return
    if name in ("conv2d", "linear"):
        weight = args[1] if len(args) > 1 else kwargs.get("weight")
        bias = args[2] if len(args) > 2 else kwargs.get("bias")
        w, b = rec.stat(weight), rec.stat(bias)
        if w is None:
            raise UnsupportedOpError(
                f"unsupported op {raw_name!r} in {rec.describe_where()}: its weight is not a model parameter "
                f"(computed in the forward); {how_to_count(owner, name)}")
        fresh = rec.claim(w, b)
        c_out = int(weight.shape[0])
        kind = "conv" if name == "conv2d" else "linear"
        rec.add(OpRecord(fpath, kind, f"{name} (functional)", shape, weight=w, bias=b, fan_in=w.numel // c_out,
                         out_channels=c_out, owns_params=fresh))
        return
    if name == "batch_norm":
        stats = tuple(s for s in (rec.stat(args[i] if len(args) > i else kwargs.get(key))
                                  for i, key in ((3, "weight"), (4, "bias"))) if s is not None)
        fresh = rec.claim(*stats) if stats else True
        rec.add(OpRecord(fpath, "free", "batch_norm", shape, params=stats, owns_params=fresh,
                         note="BN folded into the conv bias (docs/scoring.md §4)"))
        return
    if name == "interpolate":
        mode = kwargs.get("mode", args[3] if len(args) > 3 else "nearest")
        if mode == "nearest":
            rec.add(OpRecord(fpath, "upsample", "interpolate nearest", shape))
            return
    raise UnsupportedOpError(f"unsupported op {raw_name!r} in {rec.describe_where()}; {how_to_count(rec.stack[-1].module if rec.stack else None, name)}")
