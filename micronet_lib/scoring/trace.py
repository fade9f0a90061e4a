"""Capture the executed graph of a model as a list of :class:`OpRecord` (docs/scoring.md §5.1).

How (and why not only leaf hooks): forward pre/post hooks on *every* module keep a module stack;
modules of a known type (``nn.Conv2d`` and its subclasses, masked ones included, BN, activations,
pools, ...) become one record each. Everything a forward does *outside* such modules, e.g. residual
``out + shortcut(x)``, the SE gate ``u * g``, ``F.relu6``, ``x.mean((2, 3))``, is seen by a
:class:`torch.overrides.TorchFunctionMode`. So nothing the forward pass executes is invisible, and
nothing is a silent zero:

* a functional op without a defined cost raises :class:`UnsupportedOpError` naming it;
* a parameter that no counted op consumed (e.g. a custom layer whose kernel we cannot see) raises too.

The forward runs once, in eval mode, through ``torch.func.functional_call`` with substituted tensors
(clones, or empty ``meta`` tensors for shape-only propagation); exact zeros and masks are read from the
caller's tensors, and the caller's model (weights, modes, hooks) is left as it was.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import weakref
from typing import Iterable, Mapping

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

from micronet_lib.scoring.handlers import _DATA_DEPENDENT, _INT_CASTS, FREE_FUNCTIONS, data_dependent, first_tensor, functional, module_handler, shape_of
from micronet_lib.scoring.records import (
    ELEMENTWISE, OpRecord, ParamStat, UnsupportedOpError, param_stats, register_call, register_op_cost,
)

__all__ = ["OpRecord", "ParamStat", "UnsupportedOpError", "register_op_cost", "trace", "param_stats"]


class _Frame:
    __slots__ = ("path", "module", "handled", "suppressed", "inputs")

    def __init__(self, path, module, handled, suppressed, inputs):
        self.path, self.module, self.handled, self.suppressed, self.inputs = path, module, handled, suppressed, inputs


class _Recorder(TorchFunctionMode):
    """Module stack + functional-op interception; builds the record list."""

    def __init__(self, model: nn.Module, stats: dict[str, ParamStat], batch: int):
        super().__init__()
        self.stats = stats
        self.batch = batch
        self.records: list[OpRecord] = []
        self.stack: list[_Frame] = []
        self.paused = False
        self.consumed: set[str] = set()
        self.out_shapes: dict[str, tuple[int, ...]] = {}
        self.param_names = {id(p): n for n, p in model.named_parameters()}
        self.fn_counter: dict[str, int] = {}
        self.produced: dict[int, tuple] = {}  # id(output) -> (weakref(output), index of its conv/linear record)
        self.views: dict[int, tuple] = {}  # id(view of a parameter) -> (weakref(view), its ParamStat)
        self.call = ((), {}, None)  # (args, kwargs, output) of the module being recorded, for handlers that need them

    # -- bookkeeping ------------------------------------------------------------------------------
    def stat(self, param) -> ParamStat | None:
        """The parameter ``param`` is, or is a view of (``w.view(1, -1, 1, 1)``, ``w[None]``, ``w.t()``)."""
        if param is None:
            return None
        name = self.param_names.get(id(param))
        if name is None:
            ref, derived = self.views.get(id(param), (None, None))
            return derived if ref is not None and ref() is param else None
        return self.stats[name]

    def note_view(self, args, out) -> None:
        """A layout op on a parameter yields the same stored values: remember which (no math, no copy)."""
        source = next((s for s in (self.stat(a) for a in args[:1] if isinstance(a, torch.Tensor)) if s is not None), None)
        if source is None:
            return
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.views[id(t)] = (weakref.ref(t), source)

    def claim(self, *stats: ParamStat | None) -> bool:
        """Mark parameters as consumed; False if the first was charged before (shared weight)."""
        fresh = stats[0] is None or stats[0].name not in self.consumed
        for s in stats:
            if s is not None:
                self.consumed.add(s.name)
        return fresh

    def add(self, rec: OpRecord) -> None:
        self.records.append(rec)

    def where(self) -> str:
        return self.stack[-1].path if self.stack else ""

    def describe_where(self) -> str:
        if not self.stack:
            return "the model's top level"
        f = self.stack[-1]
        return f"module {f.path or '<root>'!r} ({type(f.module).__name__})"

    # -- module hooks -----------------------------------------------------------------------------
    def pre_hook(self, path: str, module: nn.Module, args):
        self.paused = True
        try:
            suppressed = any(f.handled for f in self.stack)
            handled = (not suppressed) and module_handler(module) is not None
            shapes = [tuple(int(s) for s in a.shape) for a in args if isinstance(a, torch.Tensor)]
            self.stack.append(_Frame(path, module, handled, suppressed, shapes))
        finally:
            self.paused = False

    def post_hook(self, path: str, module: nn.Module, args, kwargs, output):
        self.paused = True
        try:
            frame = self.stack.pop()
            out = first_tensor(output)
            if out is not None:
                self.out_shapes[path] = shape_of(out)
            if frame.handled and out is not None:
                before = len(self.records)
                self.call = (args, kwargs, output)
                module_handler(module)(self, path, module, frame.inputs, shape_of(out))
                self._link_bias(module, args, out, before)
        finally:
            self.paused = False

    def _link_bias(self, module, args, out, before: int) -> None:
        """Remember conv/linear outputs; a BatchNorm fed by one marks it ``bn_follows`` (bias policy)."""
        new = self.records[before:]
        if len(new) == 1 and new[0].kind in ("conv", "linear") and isinstance(out, torch.Tensor):
            self.produced[id(out)] = (weakref.ref(out), before)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm) and args and isinstance(args[0], torch.Tensor):
            ref, idx = self.produced.get(id(args[0]), (None, None))
            if ref is not None and ref() is args[0]:
                self.records[idx] = dataclasses.replace(self.records[idx], bn_follows=True)

    # -- functional ops ---------------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", None) or repr(func)
        if name in _DATA_DEPENDENT and not self.paused and not any(f.handled or f.suppressed for f in self.stack):
            arg = args[0] if args else None
            constant_cast = (name in _INT_CASTS and isinstance(arg, torch.Tensor)
                             and (arg.dim() == 0 or arg.shape[0] != self.batch))
            if constant_cast:  # an integer cast of a constant (not of per-example data): no math
                return func(*args, **kwargs)
            data_dependent(self, name)
        out = func(*args, **kwargs)
        if self.paused or any(f.handled or f.suppressed for f in self.stack):
            return out
        if name in FREE_FUNCTIONS or name.rstrip("_") in FREE_FUNCTIONS:
            self.note_view(args, out)
        result = first_tensor(out)
        if result is None or not isinstance(out, torch.Tensor) and not isinstance(out, (tuple, list)):
            return out  # metadata queries (size, dim, shape, ...) return no tensor: no math
        functional(self, name, args, kwargs, result)
        return out


# ------------------------------------------------------------------------------------------------

def _skipped_se_records(rec: _Recorder, path: str, block: nn.Module) -> list[OpRecord]:
    """Dead SE of a MicroBlock built with ``stride2_se="skip"``: charged anyway (docs/scoring.md §5.1)."""
    out_shape = rec.out_shapes.get(path)
    if out_shape is None:
        return []
    c, h, w = out_shape
    note = "dead SE not executed (stride2_se='skip'); added explicitly per docs/scoring.md §5.1"
    recs = [OpRecord(f"{path}.se.pool", "avg_pool", f"GlobalAvgPool {h * w}->1", (c, 1, 1), window=h * w, note=note)]
    for name, act in (("fc1", "hswish"), ("fc2", "sigmoid")):
        fc = getattr(block, name)
        prefix = f"{path}.{name}" if path else name
        wstat, bstat = rec.stats[f"{prefix}.weight"], rec.stats.get(f"{prefix}.bias")
        fresh = rec.claim(wstat, bstat)
        recs.append(OpRecord(f"{path}.{name}", "conv", f"Conv2d 1x1/s1 {fc.in_channels}->{fc.out_channels}",
                             (fc.out_channels, 1, 1), weight=wstat, bias=bstat, fan_in=wstat.numel // fc.out_channels,
                             out_channels=fc.out_channels, owns_params=fresh, note=note))
        m, a = ELEMENTWISE[act]
        recs.append(OpRecord(f"{path}.{name}:{act}", "elementwise", act, (fc.out_channels, 1, 1),
                             mults_per_element=m, adds_per_element=a, note=note))
    return recs


def trace(model: nn.Module, input_size: Iterable[int] = (1, 3, 32, 32), *, device: str = "cpu",
          extra_params: Mapping[str, int | str | None] | None = None) -> list[OpRecord]:
    """Run one eval-mode forward on a copy of ``model`` and return the executed ops in order.

    ``device="cpu"`` runs real (cloned) tensors; ``"meta"`` propagates shapes only (no arithmetic, so a
    10-GFLOP model costs no more than a small one, but the first meta call pays a one-off set-up).
    The caller's model (mode, weights, hooks) is unchanged. ``extra_params`` declares parameters no
    counted op uses (see :func:`micronet_lib.scoring.count`).
    """
    size = tuple(int(s) for s in input_size)
    if len(size) < 2 or any(s < 1 for s in size):
        raise ValueError(f"input_size={tuple(input_size)!r} must be positive, batch first, e.g. (1, 3, 32, 32)")
    stats = param_stats(model)
    # No deep copy (it dominated the runtime): the caller's modules run with substituted tensors
    # (torch.func.functional_call) -- empty meta tensors, or clones on a real device -- so a mask
    # pre-hook's in-place multiply never touches the caller's weights; modes are restored below.
    work = model
    with torch.no_grad():
        substitutes = {}
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            sub = torch.empty_like(t, device="meta") if device == "meta" else t.detach().to(device, copy=True)
            substitutes[name] = nn.Parameter(sub, requires_grad=False) if isinstance(t, nn.Parameter) else sub
    rec = _Recorder(work, stats, size[0])
    rec.param_names = {id(t): n for n, t in substitutes.items() if isinstance(t, nn.Parameter)}
    modes = {m: m.training for m in model.modules()}
    handles = []
    # Only shapes matter, never the values: one thread avoids oversubscribing a shared CPU, where a
    # multi-threaded batch-1 forward was measured 10-20x slower than a single-threaded one.
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        model.eval()
        for path, module in work.named_modules():
            handles.append(module.register_forward_pre_hook(
                lambda m, a, _p=path: rec.pre_hook(_p, m, a), prepend=True))  # before a mask hook: it runs inside
            handles.append(module.register_forward_hook(lambda m, a, k, o, _p=path: rec.post_hook(_p, m, a, k, o),
                                                        with_kwargs=True))
        x = torch.zeros(size, device=device)
        with torch.no_grad(), rec:
            torch.func.functional_call(model, substitutes, (x,), tie_weights=True, strict=False)
    finally:
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.training = training
        torch.set_num_threads(threads)
    records = rec.records
    for path, module in work.named_modules():
        if getattr(module, "se_computed", True) is False and hasattr(module, "fc1") and hasattr(module, "fc2"):
            # Insert after the block's last record, where the faithful model would have run the SE.
            last = max((i for i, r in enumerate(records) if r.path.startswith(path + ".") or r.path.startswith(path + ":")),
                       default=len(records) - 1)
            records = records[: last + 1] + _skipped_se_records(rec, path, module) + records[last + 1:]
    records += _declared_records(stats, rec.consumed, extra_params)
    unused = [n for n in stats if n not in rec.consumed and n not in _declared_names(stats, extra_params)]
    if unused:
        raise UnsupportedOpError(_unused_message(work, unused))
    return records


def _declared_names(stats, extra_params) -> set[str]:
    return {n for pattern in (extra_params or {}) for n in stats if fnmatch.fnmatchcase(n, pattern)}


def _declared_records(stats: dict[str, ParamStat], consumed: set[str], extra_params) -> list[OpRecord]:
    """One row per parameter declared through ``count(extra_params=)``: stored (an int width or None) or
    declared free with the reason given (a string). Names are exact or globs; each must name a parameter
    that no counted op stores already."""
    recs = []
    for pattern, value in (extra_params or {}).items():
        names = [n for n in stats if fnmatch.fnmatchcase(n, pattern)]
        if not names:
            close = difflib.get_close_matches(pattern, list(stats), n=5, cutoff=0.3)
            raise ValueError(f"extra_params: {pattern!r} names no parameter of the model; closest: {close or list(stats)[:5]}")
        if not (value is None or (isinstance(value, str) and value.strip())
                or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 32)):
            raise ValueError(f"extra_params[{pattern!r}]={value!r} must be a bit width in [1, 32], None (the layer's "
                             "param_bits) or a non-empty reason why inference does not need it")
        for n in names:
            if n in consumed:
                raise ValueError(f"extra_params: {n!r} is already stored by a counted op; declaring it would count it twice")
            if isinstance(value, str):
                recs.append(OpRecord(n, "free", "parameter not stored", (), params=(stats[n],),
                                     note=f"declared free: {value}"))
            else:
                recs.append(OpRecord(n, "stored", "declared parameter", (), params=(stats[n],), declared_bits=value,
                                     note="declared through extra_params: stored dense"))
    return recs


def _unused_message(model: nn.Module, unused: list[str]) -> str:
    """Which parameters no counted op used, and the exact declarations that make them count."""
    owners = dict(model.named_modules())
    owner_of = {n: owners.get(n.rpartition(".")[0], model) for n in unused}
    described = ", ".join(f"{n} ({type(owner_of[n]).__name__})" for n in unused[:6])
    declare = "{" + ", ".join(f"{n!r}: 32" for n in unused) + "}"
    msg = (f"{len(unused)} parameter(s) are not used by any counted op, so their storage would be a silent zero: "
           f"{described}{', ...' if len(unused) > 6 else ''}. If inference needs them (a class token, a table), "
           f"declare them stored: `count(..., extra_params={declare})` (bits each; a string instead of the width "
           "declares one free, with that reason)")
    leaves = {type(m) for n, m in owner_of.items() if m is not model and not any(True for _ in m.children())}
    if len(leaves) == 1:
        cls = leaves.pop()
        msg += (f"; or, if {cls.__name__} computes with them in a way the tracer cannot see, count it as one unit: "
                f"`{register_call(cls, True)}`")
    return msg
