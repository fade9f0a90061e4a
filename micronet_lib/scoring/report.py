"""``count(model)`` → :class:`ScoreReport`: per-layer table, totals, the two score terms (docs/scoring.md §1, §5).

Units: a parameter value costs b/32 (16-bit freebie: ½), each mask bit 1/32, a multiply
max(input bits)/32 (freebie: ½), an add accumulator_bits/32 (default 32, and always 32 under the
freebie, docs/scoring.md §2.3). Widths come per layer from an int, a ``{glob: bits}`` dict or the model's
attributes; the bias policy and early-exit rates are applied to the traced records before charging.
All sums are exact Fractions; the table and the summary show float64 views of them
(``ScoreReport.exact`` keeps the rationals).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Iterable, Mapping, Sequence

import pandas as pd
import torch.nn as nn

from micronet_lib.scoring.conventions import Convention, get_convention
from micronet_lib.scoring.ops import as_fraction
from micronet_lib.scoring.layouts import LAYOUTS, list_layouts, register_layout
from micronet_lib.scoring.trace import OpRecord, trace
from micronet_lib.scoring.widths import (
    BIT_ATTRIBUTES, FROM_MODEL, TREE, BitSpec, accumulator_width, bits_for, bits_from_model, check_patterns,
)
from micronet_lib.models.micronet import weight_group

__all__ = [
    "PARAMS_NORMALIZER",
    "OPS_NORMALIZER",
    "WRN28_10_PARAMS",
    "WRN28_10_OPS",
    "ScoreReport",
    "count",
    "score_records",
    "score",
    "list_layouts",
    "register_layout",
    "bits_from_model",
    "exit_reach",
    "measure_exit_rates",
    "BIT_ATTRIBUTES",
    "BIAS_POLICIES",
]

# WideResNet-28-10, the CIFAR-100 baseline since 2019-09-04 (docs/scoring.md §1, §7.2): 36,529,028 params
# (every conv with a folded-BN bias, FC 640→100) and 10,490,270,720 ops, rounded by the organisers.
WRN28_10_PARAMS = 36_529_028
WRN28_10_OPS = 10_490_270_720
PARAMS_NORMALIZER = 36.5e6  # ≈ WRN28_10_PARAMS
OPS_NORMALIZER = 10.49e9  # ≈ WRN28_10_OPS

def score(params_s: float, ops_s: float, *, normalizers: tuple[float, float] = (PARAMS_NORMALIZER, OPS_NORMALIZER)) -> float:
    """score = S_p / 36.5e6 + S_o / 10.49e9 (docs/scoring.md §1)."""
    return params_s / normalizers[0] + ops_s / normalizers[1]


@dataclass(frozen=True)
class ScoreReport:
    """``table``: one row per op; ``summary``: totals and score (floats); ``exact``: the same as Fractions."""

    table: pd.DataFrame
    summary: dict
    exact: dict = field(repr=False)

    def by_group(self) -> pd.DataFrame:
        """Raw params (values), mults and adds summed per ``group`` (the docs/scoring.md §7.4 rows)."""
        cols = ["params", "mask_bits", "mults", "adds"]
        return self.table.groupby("group", sort=False)[cols].sum()

    def accounting(self) -> str:
        """One line: what the convention omits and what is declared free, so nothing is dropped unseen."""
        def listing(d: dict) -> str:
            return ", ".join(f"{k} x{v}" for k, v in sorted(d.items(), key=lambda kv: (-kv[1], kv[0])))

        s = self.summary
        omitted, free = s.get("omitted", {}), s.get("declared_free", {})
        parts = [f"omitted by {s['convention']}: {sum(omitted.values())} op(s) ({listing(omitted)})" if omitted
                 else f"omitted by {s['convention']}: none"]
        parts.append(f"declared free: {sum(free.values())} row(s) ({listing(free)})" if free else "declared free: none")
        return "; ".join(parts)

    def __str__(self) -> str:
        s = self.summary
        return (f"{s['convention']}: params_s {s['params_s']:,.2f} (P {s['params']:,.0f}, mask bits {s['mask_bits']:,}), "
                f"ops_s {s['ops_s']:,.2f} (adds {s['adds']:,.2f}, mults {s['mults']:,.2f}), score {s['score']:.7f}")


BIAS_POLICIES = ("folded", "present", "own")


def _group(path: str, r: OpRecord) -> str:
    if r.kind in ("conv", "linear"):
        try:
            return weight_group(path.split(":")[0])
        except ValueError:
            return r.kind
    if r.kind == "free" and "atch" in r.op:  # BatchNorm2d / batch_norm
        return "bn"
    if r.kind == "elementwise":
        return r.op.split(" ")[0]
    return r.kind


def _apply_bias_policy(records: Sequence[OpRecord], policy: str) -> list[OpRecord]:
    """``folded``: every conv/FC has a (folded-BN) bias (the rules' worked example, both conventions, §3.4);
    ``present``: a bias only where the layer has one or a BatchNorm right after it folds into one;
    ``own``: only the layer's own bias, and each BatchNorm is charged unfused (1 mult + 1 add per element,
    its 2·C values; docs/scoring.md §4), for entries that fold BN elsewhere or not at all."""
    if policy not in BIAS_POLICIES:
        raise ValueError(f"bias={policy!r} is not known; allowed: {', '.join(BIAS_POLICIES)}")
    if policy == "folded":
        return list(records)
    out = []
    for r in records:
        if r.kind in ("conv", "linear"):
            r = replace(r, bias_charged=r.bias is not None or (policy == "present" and r.bn_follows))
        elif policy == "own" and r.kind == "free" and r.params and "orm" in r.op:
            r = replace(r, kind="module", mults_per_element=Fraction(1), adds_per_element=Fraction(1),
                        note="BN not folded (bias='own'): 1 mult + 1 add per element, 2*C values (docs/scoring.md §4)")
        out.append(r)
    return out


def exit_reach(records: Sequence[OpRecord], exit_rates: Mapping[str, float] | None) -> list[Fraction]:
    """Fraction of examples that reach each record: after the last op of an exit branch, the examples that
    stopped there are gone (expected ops over the test set, docs/scoring.md §4 "early exit")."""
    reach = [Fraction(1)] * len(records)
    if not exit_rates:
        return reach
    ends = []
    for path, rate in exit_rates.items():
        f = as_fraction(rate, f"exit_rates[{path!r}]")
        if not 0 <= f <= 1:
            raise ValueError(f"exit_rates[{path!r}]={rate!r} must be a fraction in [0, 1]")
        idx = [i for i, r in enumerate(records) if r.path == path or r.path.startswith((path + ".", path + ":"))]
        if not idx:
            seen = sorted({r.path.split(":")[0].split(".")[0] for r in records})
            raise ValueError(f"exit_rates: no counted op lies in module {path!r}; top-level modules seen: {seen}")
        if idx[-1] == len(records) - 1:
            raise ValueError(f"exit_rates: {path!r} runs last in the counting pass, so nothing is skipped after it; "
                             "the counting forward must run each exit branch before the trunk continues")
        ends.append((idx[-1], f))
    if sum(f for _, f in ends) > 1:
        raise ValueError(f"exit_rates={dict(exit_rates)!r} add up to more than 1")
    for end, f in ends:
        for i in range(end + 1, len(records)):
            reach[i] -= f
    return reach


def measure_exit_rates(exit_index, exits: Sequence[str]) -> dict[str, float]:
    """``{exit path: fraction}`` from the exit each example took (``exit_index[i]`` indexes ``exits``; an index
    of ``len(exits)`` or more means it ran to the final classifier). Feed the result to ``count(exit_rates=)``.
    ``exit_index`` comes from the model's own decision on a representative batch, e.g.
    ``model.exit_index(images)``."""
    import torch

    idx = torch.as_tensor(exit_index).reshape(-1)
    if idx.numel() == 0 or idx.dtype.is_floating_point or int(idx.min()) < 0:
        raise ValueError("exit_index must be a non-empty sequence of non-negative integers (one per example)")
    n = idx.numel()
    return {path: int((idx == i).sum()) / n for i, path in enumerate(exits)}


def score_records(records: Sequence[OpRecord], *, convention: str | Convention = "kaist", freebie: bool = True,
                  param_bits: BitSpec = None, act_bits: BitSpec = None, accumulator_bits: BitSpec = None,
                  bias_bits: BitSpec = None, bias: str = "folded", exit_rates: Mapping[str, float] | None = None,
                  normalizers: tuple[float, float] = (PARAMS_NORMALIZER, OPS_NORMALIZER), meta: dict | None = None) -> ScoreReport:
    """Charge ``records`` under a convention and build the report (see :func:`count`)."""
    conv = get_convention(convention)
    if len(normalizers) != 2 or not all(isinstance(n, (int, float)) and n > 0 for n in normalizers):
        raise ValueError(f"normalizers={normalizers!r} must be two positive numbers (params, ops)")
    records = _apply_bias_policy(records, bias)
    reach = exit_reach(records, exit_rates)
    paths = [r.path for r in records]
    for what, spec in (("param_bits", param_bits), ("act_bits", act_bits), ("accumulator_bits", accumulator_bits),
                       ("bias_bits", bias_bits)):
        check_patterns(spec, paths, what)
    widths, declared = [], []
    for r in records:
        pb = r.declared_bits or bits_for(param_bits, r.path, "param_bits")
        acc = bits_for(accumulator_bits, r.path, "accumulator_bits")
        declared.append((pb, bits_for(act_bits, r.path, "act_bits"), int(str(acc).removeprefix(TREE)),
                         bits_for(bias_bits, r.path, "bias_bits", default=pb)))
        widths.append(declared[-1][:2] + (accumulator_width(acc, r),) + declared[-1][3:])
    low = sorted({w for ws in declared for w in ws if w < 16})
    forfeited = ""
    if freebie and low:
        # Quantising any part below 16 bits forfeits the 16-bit freebie (docs/scoring.md §2.2).
        freebie, forfeited = False, f"declared widths below 16 bits ({', '.join(map(str, low))}) forfeit the freebie"
    if freebie and any(ws[2] < 32 for ws in widths):
        raise ValueError("accumulator_bits < 32 with the 16-bit freebie: under the freebie additions always count "
                         "as 32-bit (docs/scoring.md §2.3); pass freebie=False to charge adds at a lower width")
    masks = conv.mask_bits(records)
    rows, tot = [], dict(values=Fraction(0), mask_bits=0, mults=Fraction(0), adds=Fraction(0), params_s=Fraction(0),
                          ops_s=Fraction(0))
    omitted: dict[str, int] = {}  # op label -> rows the convention does not charge
    free: dict[str, int] = {}  # op label -> rows declared free (BN folded, dropout, conversions, zero-cost registrations)
    for r, mbits, (pb, ab, acc, bb), share in zip(records, masks, widths, reach):
        c = conv.cost(r)
        weighted = r.weight is not None or (r.kind != "free" and bool(r.params))  # a folded BN stores nothing
        if freebie:
            pb = bb = mult_bits = 16
            acc = 32
        else:
            # A multiply costs max(input widths)/32: weight and activation, or the activation alone.
            mult_bits = max(pb, ab) if weighted else ab
        mults, adds = c.mults * share, c.adds * share
        params_s = (c.values - c.bias_values) * pb / 32 + c.bias_values * bb / 32 + Fraction(mbits, 32)
        ops_s = adds * acc / 32 + mults * mult_bits / 32
        if "not counted" in c.note:
            omitted[r.op] = omitted.get(r.op, 0) + 1
        elif r.kind == "free" or (r.kind in ("module", "elementwise") and not (c.values or c.mults or c.adds)):
            free[r.op] = free.get(r.op, 0) + 1
        for k, v in (("values", c.values), ("mask_bits", mbits), ("mults", mults), ("adds", adds),
                     ("params_s", params_s), ("ops_s", ops_s)):
            tot[k] += v
        w = r.weight
        rows.append(dict(
            path=r.path, op=r.op, kind=r.kind, group=_group(r.path, r), out_shape="x".join(map(str, r.out_shape)),
            params=float(c.values), numel=w.numel if w else 0, nonzeros=w.nnz if w else 0,
            mask_nonzeros=(w.mask_nnz if w and w.mask_nnz is not None else float("nan")), mask_bits=mbits,
            mults=float(mults), adds=float(adds), param_bits=pb if weighted else 0, act_bits=16 if freebie else ab,
            mult_bits=mult_bits, add_bits=float(acc), reach=float(share),
            params_s=float(params_s), ops_s=float(ops_s), note="; ".join(x for x in (c.note, r.note) if x)))
    table = pd.DataFrame(rows, columns=["path", "op", "kind", "group", "out_shape", "params", "numel", "nonzeros",
                                        "mask_nonzeros", "mask_bits", "mults", "adds", "param_bits", "act_bits",
                                        "mult_bits", "add_bits", "reach", "params_s", "ops_s", "note"])
    params_term = tot["params_s"] / Fraction(repr(float(normalizers[0])))
    ops_term = tot["ops_s"] / Fraction(repr(float(normalizers[1])))
    exact = dict(params=tot["values"], mask_bits=Fraction(tot["mask_bits"]), adds=tot["adds"], mults=tot["mults"],
                 params_s=tot["params_s"], ops_s=tot["ops_s"], params_term=params_term, ops_term=ops_term,
                 score=params_term + ops_term)
    summary = {k: float(v) for k, v in exact.items()}
    summary["mask_bits"] = int(tot["mask_bits"])
    summary.update(convention=conv.name, freebie=bool(freebie), normalizers=tuple(float(n) for n in normalizers),
                   bias=bias, omitted_ops=sum(omitted.values()), omitted=omitted, declared_free=free)
    if forfeited:
        summary["freebie_forfeited"] = forfeited
    if exit_rates:
        summary["exit_rates"] = {k: float(v) for k, v in exit_rates.items()}
    summary.update(meta or {})
    return ScoreReport(table=table, summary=summary, exact=exact)


def count(model: nn.Module, input_size: Iterable[int] = (1, 3, 32, 32), *, convention: str | Convention = "kaist",
          freebie: bool = True, param_bits: BitSpec = None, act_bits: BitSpec = None, accumulator_bits: BitSpec = None,
          bias_bits: BitSpec = None, bias: str = "folded", exit_rates: Mapping[str, float] | None = None,
          normalizers: tuple[float, float] = (PARAMS_NORMALIZER, OPS_NORMALIZER), layout: str | None = None,
          device: str = "cpu", extra_params: Mapping[str, int | str | None] | None = None) -> ScoreReport:
    """Score ``model`` under the MicroNet Challenge rules (docs/scoring.md §1–§5).

    * ``convention``: ``"kaist"`` (authors' revised count, §5.2) or ``"official"`` (library, §5.3).
    * ``freebie``: 16-bit params and mults (adds stay 32-bit); forfeited automatically (the summary says
      why) when any declared width is below 16 bits (§2.2).
    * Bit widths, each an int, ``{module path or glob: bits}`` (unlisted: 32) or ``"model"`` (read the
      attribute of the same name from the op's module or its nearest ancestor): ``param_bits`` (stored
      weights), ``act_bits`` (op inputs: a multiply costs max(param, act)/32), ``accumulator_bits`` (adds
      cost acc/32; default 32 as the rules state), ``bias_bits`` (default: the layer's ``param_bits``).
    * ``bias``: ``"folded"`` (default: every conv/FC carries a folded-BN bias, §3.4, §5 -- the KAIST
      vectors), ``"present"`` (only where the layer has a bias or a BN folds into it), ``"own"`` (only
      the layer's own bias; BN charged unfused, §4).
    * ``exit_rates``: ``{exit branch module path: fraction of examples that stop there}``; ops after the
      branch are charged for the examples that go on (expected ops, §4). The counting forward must run
      every branch, each exit before the trunk continues.
    * ``layout``: a registered fixed op layout (e.g. ``"wrn_standard"``, docs/scoring.md §7.2) instead of the
      traced forward; ``None`` traces the model (one eval-mode forward, ``device`` "cpu" or "meta").
    * ``normalizers``: (params, ops), default WRN-28-10's 36.5e6 / 10.49e9.
    * ``accumulator_bits`` also takes ``"tree:N"`` (alone or as a dict value): N-bit terms summed in an
      adder tree one bit wider per level (:func:`tree_width`, docs/scoring.md).
    * ``extra_params``: ``{parameter name or glob: bits}`` for parameters no counted op uses (a class
      token): stored dense at ``bits`` (``None``: the layer's ``param_bits``), or ``{name: "reason"}``
      declares one free, not stored. Glob maps of the bit widths must each match an op (else an error).

    Counts are per example; the caller's model is left unchanged.
    """
    size = tuple(int(s) for s in input_size)
    conv = get_convention(convention)  # validate before tracing
    if bias not in BIAS_POLICIES:
        raise ValueError(f"bias={bias!r} is not known; allowed: {', '.join(BIAS_POLICIES)}")
    specs = dict(param_bits=param_bits, act_bits=act_bits, accumulator_bits=accumulator_bits, bias_bits=bias_bits)
    for name, spec in specs.items():
        if isinstance(spec, str) and spec != FROM_MODEL and not (name == "accumulator_bits" and spec.startswith(TREE)):
            raise ValueError(f"{name}={spec!r} must be an int, a {{glob: bits}} dict or {FROM_MODEL!r}")
    if layout is None:
        records = trace(model, size, device=device, extra_params=extra_params)
    else:
        if extra_params:
            raise ValueError("extra_params declares parameters of a traced model; a fixed layout lists its own")
        records = LAYOUTS.get(layout)(model, size)
    for name, spec in specs.items():
        if spec == FROM_MODEL:
            specs[name] = bits_from_model(model, records, name)
    return score_records(records, convention=conv, freebie=freebie, bias=bias, exit_rates=exit_rates,
                         normalizers=normalizers, meta=dict(input_size=size, layout=layout or "traced"), **specs)
