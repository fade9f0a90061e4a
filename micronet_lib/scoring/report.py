"""``count(model)`` → :class:`ScoreReport`: per-layer table, totals, the two score terms (docs/scoring.md §1, §5).

Units: a parameter value costs b/32 (16-bit freebie: ½), each mask bit 1/32, a multiply
max(input bits)/32 (freebie: ½), an add always 1 (32-bit accumulation, docs/scoring.md §2.3). All sums
are exact Fractions; the table and the summary show float64 views of them (``ScoreReport.exact``
keeps the rationals).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Iterable, Mapping, Sequence

import pandas as pd
import torch.nn as nn

from micronet_lib.scoring.conventions import Convention, get_convention
from micronet_lib.scoring.trace import OpRecord, trace

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
]

# WideResNet-28-10, the CIFAR-100 baseline since 2019-09-04 (docs/scoring.md §1, §7.2): 36,529,028 params
# (every conv with a folded-BN bias, FC 640→100) and 10,490,270,720 ops, rounded by the organisers.
WRN28_10_PARAMS = 36_529_028
WRN28_10_OPS = 10_490_270_720
PARAMS_NORMALIZER = 36.5e6  # ≈ WRN28_10_PARAMS
OPS_NORMALIZER = 10.49e9  # ≈ WRN28_10_OPS

_LAYOUTS: dict[str, callable] = {}


def register_layout(name: str):
    """Register ``fn(model, input_size) -> list[OpRecord]``: a fixed op layout used instead of tracing."""

    def wrap(fn):
        if name in _LAYOUTS:
            raise ValueError(f"layout {name!r} is already registered")
        _LAYOUTS[name] = fn
        return fn

    return wrap


def list_layouts() -> list[str]:
    return sorted(_LAYOUTS)


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

    def __str__(self) -> str:
        s = self.summary
        return (f"{s['convention']}: params_s {s['params_s']:,.2f} (P {s['params']:,.0f}, mask bits {s['mask_bits']:,}), "
                f"ops_s {s['ops_s']:,.2f} (adds {s['adds']:,.2f}, mults {s['mults']:,.2f}), score {s['score']:.7f}")


def _bits_for(spec, path: str, what: str) -> int | None:
    if spec is None:
        return None
    if isinstance(spec, Mapping):
        for pattern, bits in spec.items():
            if path == pattern or fnmatch.fnmatchcase(path, pattern):
                return _check_bits(bits, f"{what}[{pattern!r}]")
        return 32
    return _check_bits(spec, what)


def _check_bits(bits, what) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 32:
        raise ValueError(f"{what}={bits!r} must be an integer bit width in [1, 32]")
    return bits


def _group(path: str, r: OpRecord) -> str:
    if r.kind in ("conv", "linear"):
        try:
            from micronet_lib.models.micronet import weight_group

            return weight_group(path.split(":")[0])
        except (ImportError, ValueError):
            return r.kind
    if r.kind == "free" and "atch" in r.op:  # BatchNorm2d / batch_norm
        return "bn"
    if r.kind == "elementwise":
        return r.op.split(" ")[0]
    return r.kind


def score_records(records: Sequence[OpRecord], *, convention: str | Convention = "kaist", freebie: bool = True,
                  param_bits: int | Mapping[str, int] | None = None, act_bits: int | Mapping[str, int] | None = None,
                  normalizers: tuple[float, float] = (PARAMS_NORMALIZER, OPS_NORMALIZER), meta: dict | None = None) -> ScoreReport:
    """Charge ``records`` under a convention and build the report (see :func:`count`)."""
    conv = get_convention(convention)
    if (param_bits is not None or act_bits is not None) and freebie:
        raise ValueError("param_bits/act_bits describe a quantised model, which forfeits the 16-bit freebie "
                         "(docs/scoring.md §2.2); pass freebie=False with them")
    if len(normalizers) != 2 or not all(isinstance(n, (int, float)) and n > 0 for n in normalizers):
        raise ValueError(f"normalizers={normalizers!r} must be two positive numbers (params, ops)")
    masks = conv.mask_bits(records)
    rows, tot = [], dict(values=Fraction(0), mask_bits=0, mults=Fraction(0), adds=Fraction(0), params_s=Fraction(0),
                          ops_s=Fraction(0))
    for r, mbits in zip(records, masks):
        c = conv.cost(r)
        if freebie:
            pb = ab = 16
        else:
            pb = _bits_for(param_bits, r.path, "param_bits") or 32
            ab = _bits_for(act_bits, r.path, "act_bits") or 32
        # A weight multiply costs max(input widths)/32; an activation-only multiply costs the activation's.
        mult_bits = max(pb, ab) if r.weight is not None else ab
        if freebie:
            mult_bits = 16
        params_s = c.values * pb / 32 + Fraction(mbits, 32)
        ops_s = c.adds + c.mults * mult_bits / 32
        for k, v in (("values", c.values), ("mask_bits", mbits), ("mults", c.mults), ("adds", c.adds),
                     ("params_s", params_s), ("ops_s", ops_s)):
            tot[k] += v
        w = r.weight
        rows.append(dict(
            path=r.path, op=r.op, kind=r.kind, group=_group(r.path, r), out_shape="x".join(map(str, r.out_shape)),
            params=float(c.values), numel=w.numel if w else 0, nonzeros=w.nnz if w else 0,
            mask_nonzeros=(w.mask_nnz if w and w.mask_nnz is not None else float("nan")), mask_bits=mbits,
            mults=float(c.mults), adds=float(c.adds), param_bits=pb if w else 0, mult_bits=mult_bits,
            params_s=float(params_s), ops_s=float(ops_s), note="; ".join(x for x in (c.note, r.note) if x)))
    table = pd.DataFrame(rows, columns=["path", "op", "kind", "group", "out_shape", "params", "numel", "nonzeros",
                                        "mask_nonzeros", "mask_bits", "mults", "adds", "param_bits", "mult_bits",
                                        "params_s", "ops_s", "note"])
    params_term = tot["params_s"] / Fraction(repr(float(normalizers[0])))
    ops_term = tot["ops_s"] / Fraction(repr(float(normalizers[1])))
    exact = dict(params=tot["values"], mask_bits=Fraction(tot["mask_bits"]), adds=tot["adds"], mults=tot["mults"],
                 params_s=tot["params_s"], ops_s=tot["ops_s"], params_term=params_term, ops_term=ops_term,
                 score=params_term + ops_term)
    summary = {k: float(v) for k, v in exact.items()}
    summary["mask_bits"] = int(tot["mask_bits"])
    summary.update(convention=conv.name, freebie=bool(freebie), normalizers=tuple(float(n) for n in normalizers))
    summary.update(meta or {})
    return ScoreReport(table=table, summary=summary, exact=exact)


def count(model: nn.Module, input_size: Iterable[int] = (1, 3, 32, 32), *, convention: str | Convention = "kaist",
          freebie: bool = True, param_bits: int | Mapping[str, int] | None = None,
          act_bits: int | Mapping[str, int] | None = None,
          normalizers: tuple[float, float] = (PARAMS_NORMALIZER, OPS_NORMALIZER), layout: str | None = None,
          device: str = "cpu") -> ScoreReport:
    """Score ``model`` under the MicroNet Challenge rules (docs/scoring.md §1–§5).

    * ``convention``: ``"kaist"`` (authors' revised count, §5.2) or ``"official"`` (library, §5.3).
    * ``freebie``: 16-bit params and mults (adds stay 32-bit). ``param_bits``/``act_bits``: bit widths
      of a quantised model, one int or ``{module path or glob: bits}`` (unlisted paths: 32); they need
      ``freebie=False``.
    * ``layout``: a registered fixed op layout (e.g. ``"wrn_standard"``, docs/scoring.md §7.2) instead of the
      traced forward; ``None`` traces the model (one eval-mode forward, ``device`` "cpu" or "meta").
    * ``normalizers``: (params, ops), default WRN-28-10's 36.5e6 / 10.49e9.

    Counts are per example; the caller's model is left unchanged.
    """
    size = tuple(int(s) for s in input_size)
    conv = get_convention(convention)  # validate before tracing
    if layout is None:
        records = trace(model, size, device=device)
    else:
        if layout not in _LAYOUTS:
            import micronet_lib.scoring.layouts  # noqa: F401  (registers the built-in layouts)
        if layout not in _LAYOUTS:
            raise ValueError(f"layout={layout!r} is not known; allowed: None (trace), {', '.join(list_layouts())}")
        records = _LAYOUTS[layout](model, size)
    return score_records(records, convention=conv, freebie=freebie, param_bits=param_bits, act_bits=act_bits,
                         normalizers=normalizers, meta=dict(input_size=size, layout=layout or "traced"))
