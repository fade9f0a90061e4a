"""Intervals and verdicts for the reports (issue #11): how sure a number is, and what it says about a claim.

- ``mean_interval``: mean of per-seed values with a Student-t interval (n - 1 degrees of freedom).
- ``paired_difference``: per-seed differences ``treatment - baseline`` over the seeds both arms share,
  and the t interval of their mean (the same seed feeds both arms, so seed-to-seed noise cancels).
- ``paired_effect``: the same difference paired by seed *and* by test image (per-image outcomes of both
  arms on one test split): a two-way crossed random-effects (seed × image) estimate of its standard error,
  with Satterthwaite degrees of freedom (docs/verdicts.md, "Estimator"); ``effect_components`` gives the
  variance components it rests on (``power`` predicts intervals of other designs from them).
- ``wilson_interval``: a single evaluation of ``hits`` out of ``n`` images (Wilson score interval), for
  accuracies that have no seeds to average (a released checkpoint on a test set).
- ``separated_best``: the best of several cells, named only when its interval lies clear of every other.
- ``verdict`` / ``exact_verdict``: the rules of ``docs/verdicts.md``, applied to those intervals.

Quantiles come from ``scipy.stats``; nothing here knows about training or notebooks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy import stats as _sp

__all__ = [
    "LEVEL",
    "Interval",
    "mean_interval",
    "paired_difference",
    "EffectComponents",
    "effect_components",
    "paired_effect",
    "wilson_interval",
    "separated_best",
    "Verdict",
    "VERDICTS",
    "LEANING_FOR",
    "LEANING_AGAINST",
    "INCONCLUSIVE",
    "leaning",
    "verdict",
    "exact_verdict",
    "value_verdict",
    "not_verifiable",
]

LEVEL = 0.95  # every interval of the reports is a 95 % interval unless a caller asks otherwise


def _check_level(level: float) -> float:
    if not isinstance(level, (int, float)) or not 0 < level < 1:
        raise ValueError(f"level={level!r} must be a probability strictly between 0 and 1, e.g. 0.95")
    return float(level)


def _finite(values: Sequence[float], what: str) -> list[float]:
    out = []
    for v in values:
        if v is None or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
            raise ValueError(f"{what} must be finite numbers, got {v!r} in {list(values)!r}")
        out.append(float(v))
    return out


@dataclass(frozen=True)
class Interval:
    """An estimate with its ``level`` interval ``[low, high]``; ``low``/``high`` are NaN when ``n`` is too
    small to give one (one seed). ``method`` names how it was computed, for the reader."""

    estimate: float
    low: float
    high: float
    n: int
    method: str
    level: float = LEVEL

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2 if self.has_interval else math.nan

    def contains(self, value: float) -> bool:
        return self.has_interval and self.low <= value <= self.high

    def text(self, digits: int = 1, unit: str = "") -> str:
        """``"31.6 %, 95 % CI [29.0, 34.2] (3 seeds)"``; without an interval it says why."""
        pct = f"{round(self.level * 100):d} %"
        est = f"{self.estimate:.{digits}f}{unit}"
        if not self.has_interval:
            return f"{est} (n = {self.n}: no interval)"
        return f"{est}, {pct} CI [{self.low:.{digits}f}, {self.high:.{digits}f}] ({self.method}, n = {self.n})"


def mean_interval(values: Sequence[float], *, level: float = LEVEL) -> Interval:
    """Mean of ``values`` (one per seed) with the t interval ``mean ± t_{n-1} · sd / √n``.

    One value gives the mean with a NaN interval: a single seed says nothing about spread.
    """
    level = _check_level(level)
    xs = _finite(values, "values")
    if not xs:
        raise ValueError("mean_interval needs at least one value")
    n = len(xs)
    mean = math.fsum(xs) / n
    if n < 2:
        return Interval(mean, math.nan, math.nan, n, "t over seeds", level)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(_sp.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, "t over seeds", level)


def paired_difference(treatment: Mapping[int, float], baseline: Mapping[int, float], *,
                      level: float = LEVEL) -> Interval:
    """``treatment - baseline`` per seed (dicts seed → value), over the seeds both share, with its t interval.

    Seeds present in only one arm are left out (they cannot be paired); no shared seed is an error.
    """
    if not isinstance(treatment, Mapping) or not isinstance(baseline, Mapping):
        raise ValueError("paired_difference takes two {seed: value} mappings so the arms are paired by seed")
    shared = sorted(set(treatment) & set(baseline))
    if not shared:
        raise ValueError(f"no seed in common: treatment seeds {sorted(treatment)}, baseline seeds {sorted(baseline)}")
    diffs = _finite([treatment[s] for s in shared], "treatment values")
    base = _finite([baseline[s] for s in shared], "baseline values")
    out = mean_interval([a - b for a, b in zip(diffs, base)], level=level)
    return Interval(out.estimate, out.low, out.high, out.n, "paired t over seeds", out.level)


@dataclass(frozen=True)
class EffectComponents:
    """Mean squares of the seeds × images table of per-image differences ``d[s, i]`` (treatment correct −
    baseline correct, each 0/1), and the variance components they estimate (fractions², not points²):

    ``d[s, i] = Δ + a_s + b_i + e_si`` with ``a_s`` the seed's (training) effect on the difference,
    ``b_i`` the image's, ``e_si`` the rest. Method-of-moments estimates, clipped at 0.
    """

    delta: float          # mean of d (a fraction; × 100 for points)
    seeds: int
    images: int
    ms_seed: float
    ms_image: float
    ms_residual: float

    @property
    def var_seed(self) -> float:
        return max(0.0, (self.ms_seed - self.ms_residual) / self.images) if self.seeds > 1 else math.nan

    @property
    def var_image(self) -> float:
        return max(0.0, (self.ms_image - self.ms_residual) / self.seeds)

    @property
    def var_residual(self) -> float:
        return self.ms_residual

    def variance_of_mean(self) -> tuple[float, float]:
        """Var(Δ̂) = σ²_seed/S + σ²_image/N + σ²_residual/(SN) as ``(variance, Satterthwaite df)``."""
        s, n = self.seeds, self.images
        if s < 2:
            return math.nan, math.nan
        terms = [(self.ms_seed / (s * n), s - 1), (self.ms_image / (s * n), n - 1),
                 (-self.ms_residual / (s * n), (s - 1) * (n - 1))]
        var = sum(t for t, _ in terms)
        floor = self.var_seed / s + self.var_image / n + self.var_residual / (s * n)  # the clipped components
        var = max(var, floor)
        denom = sum(t * t / df for t, df in terms if df > 0)
        return var, (var * var / denom if denom > 0 else math.inf)


def effect_components(treatment: "np.ndarray", baseline: "np.ndarray") -> EffectComponents:
    """Components of ``treatment − baseline`` from two seeds × images 0/1 (or boolean) arrays, row s of both
    being the same seed and column i the same test image."""
    t = np.asarray(treatment, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    if t.shape != b.shape or t.ndim != 2 or t.shape[1] < 2:
        raise ValueError(f"treatment and baseline must be seeds × images arrays of one shape with >= 2 images, "
                         f"got {t.shape} and {b.shape}")
    if not (np.isin(t, (0.0, 1.0)).all() and np.isin(b, (0.0, 1.0)).all()):
        raise ValueError("per-image outcomes must be 0/1 (correct or not)")
    d = t - b
    s, n = d.shape
    m = float(d.mean())
    rows, cols = d.mean(axis=1), d.mean(axis=0)
    ms_seed = n * float(((rows - m) ** 2).sum()) / (s - 1) if s > 1 else math.nan
    ms_image = s * float(((cols - m) ** 2).sum()) / (n - 1)
    if s > 1:
        resid = d - rows[:, None] - cols[None, :] + m
        ms_resid = float((resid ** 2).sum()) / ((s - 1) * (n - 1))
    else:  # one seed: seed and residual cannot be told apart; the image mean square holds both
        ms_resid = 0.0
    return EffectComponents(m, s, n, ms_seed, ms_image, ms_resid)


def paired_effect(treatment: Mapping[int, Sequence[bool]], baseline: Mapping[int, Sequence[bool]], *,
                  level: float = LEVEL) -> Interval:
    """``treatment − baseline`` top-1 in points from per-image outcomes (dicts seed → 0/1 per test image, every
    seed on the same images in the same order), paired by seed and by image, with a t interval whose standard
    error counts training noise (seeds) and test-image sampling (images): ``effect_components``.

    Seeds present in only one arm are left out; one shared seed gives no interval (training noise unknown).
    """
    level = _check_level(level)
    if not isinstance(treatment, Mapping) or not isinstance(baseline, Mapping):
        raise ValueError("paired_effect takes two {seed: per-image outcomes} mappings so the arms are paired by seed")
    shared = sorted(set(treatment) & set(baseline))
    if not shared:
        raise ValueError(f"no seed in common: treatment seeds {sorted(treatment)}, baseline seeds {sorted(baseline)}")
    lengths = {len(treatment[k]) for k in shared} | {len(baseline[k]) for k in shared}
    if len(lengths) != 1:
        raise ValueError(f"per-image outcomes of different lengths {sorted(lengths)}: every run must be scored on "
                         "the same test images")
    comp = effect_components(np.array([treatment[k] for k in shared]), np.array([baseline[k] for k in shared]))
    var, df = comp.variance_of_mean()
    est = 100 * comp.delta
    method = f"paired by seed and image ({comp.images:,} images)"
    if not math.isfinite(var):
        return Interval(est, math.nan, math.nan, comp.seeds, method, level)
    half = 100 * float(_sp.t.ppf(0.5 + level / 2, df)) * math.sqrt(var)
    return Interval(est, est - half, est + half, comp.seeds, method, level)


def wilson_interval(hits: int, n: int, *, level: float = LEVEL) -> Interval:
    """``hits / n`` as a percentage with the Wilson score interval (one evaluation, no seeds)."""
    level = _check_level(level)
    for name, v in (("hits", hits), ("n", n)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{name}={v!r} must be a non-negative int")
    if n == 0 or hits > n:
        raise ValueError(f"need 0 <= hits <= n and n > 0, got hits={hits}, n={n}")
    z = float(_sp.norm.ppf(0.5 + level / 2))
    p = hits / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Interval(100 * p, 100 * max(0.0, centre - half), 100 * min(1.0, centre + half), n,
                    "Wilson, one evaluation", level)


def separated_best(intervals: Mapping[str, Interval], *, higher_is_better: bool = True) -> str | None:
    """The name of the best cell when its interval lies entirely beyond every other cell's interval;
    ``None`` when any interval is missing or overlaps the best one (the data cannot name a best)."""
    if len(intervals) < 2:
        raise ValueError(f"separated_best needs at least two cells, got {list(intervals)}")
    if not all(iv.has_interval for iv in intervals.values()):
        return None
    sign = 1 if higher_is_better else -1
    best = max(intervals, key=lambda k: sign * intervals[k].estimate)
    b = intervals[best]
    for name, iv in intervals.items():
        if name == best:
            continue
        clear = b.low > iv.high if higher_is_better else b.high < iv.low
        if not clear:
            return None
    return best


# ------------------------------------------------------------------------------------------- verdicts

# Inconclusive verdicts carry the sign of the point estimate (docs/verdicts.md rule 3): a reader who skims
# the label must not take an effect that points the other way for support.
LEANING_FOR, LEANING_AGAINST, INCONCLUSIVE = "inconclusive, leaning for", "inconclusive, leaning against", "inconclusive"
VERDICTS = ("reproduced exactly", "reproduced", LEANING_FOR, LEANING_AGAINST, INCONCLUSIVE,
            "not reproduced at this budget", "contradicted", "not verifiable here")


@dataclass(frozen=True)
class Verdict:
    """One of ``VERDICTS`` and the sentence that says which rule gave it (docs/verdicts.md)."""

    label: str
    reason: str

    def __post_init__(self) -> None:
        if self.label not in VERDICTS:
            raise ValueError(f"Verdict.label={self.label!r}; allowed: {', '.join(VERDICTS)}")

    def text(self) -> str:
        return f"**{self.label}** — {self.reason}"


def leaning(estimate: float, direction: int = +1) -> str:
    """Rule 3's label: the sign of the point estimate relative to the claim's predicted direction
    (``"inconclusive, leaning for"`` / ``"… against"``; exactly 0 is plain ``"inconclusive"``)."""
    signed = direction * float(estimate)
    return LEANING_FOR if signed > 0 else LEANING_AGAINST if signed < 0 else INCONCLUSIVE


def verdict(effect: Interval, *, direction: int = +1, paper_setup: bool = False) -> Verdict:
    """The verdict on a claimed effect from its interval (docs/verdicts.md, rules 2–5).

    ``effect`` is a paired difference (or any interval) whose sign the claim predicts: ``direction=+1``
    when the claim says it is positive, ``-1`` when negative. ``paper_setup`` is True only when the run
    used the paper's data and budget; an interval on the wrong side is then *contradicted*, otherwise
    *not reproduced at this budget* (the smaller budget or stand-in data may be the reason).
    """
    if direction not in (+1, -1):
        raise ValueError(f"direction={direction!r} must be +1 (claim: positive) or -1 (claim: negative)")
    if not isinstance(effect, Interval):
        raise ValueError(f"effect must be an Interval, got {type(effect).__name__}")
    pct = f"{round(effect.level * 100):d} %"
    if not effect.has_interval:
        return Verdict(leaning(effect.estimate, direction),
                       f"n = {effect.n}: no interval can be computed from one value; the point estimate "
                       f"{effect.estimate:+.2f} gives only the direction it leans")
    lo, hi = sorted((direction * effect.low, direction * effect.high))
    side = "above" if direction > 0 else "below"
    if lo > 0:
        return Verdict("reproduced", f"the {pct} interval [{effect.low:.2f}, {effect.high:.2f}] lies {side} 0, "
                                     "the direction the claim predicts")
    if hi < 0:
        if paper_setup:
            return Verdict("contradicted", f"the {pct} interval [{effect.low:.2f}, {effect.high:.2f}] lies on the "
                                           "side opposite to the claim, at the paper's data and budget")
        return Verdict("not reproduced at this budget",
                       f"the {pct} interval [{effect.low:.2f}, {effect.high:.2f}] lies on the side opposite to the "
                       "claim; the budget and data differ from the paper's, which may be why")
    signed = direction * effect.estimate
    way = "the way the claim predicts" if signed > 0 else "against the claim" if signed < 0 else "neither way"
    return Verdict(leaning(effect.estimate, direction),
                   f"the {pct} interval [{effect.low:.2f}, {effect.high:.2f}] contains 0: this budget cannot tell; "
                   f"the point estimate {effect.estimate:+.2f} points {way}")


def exact_verdict(error: float, tolerance: float, *, what: str = "error") -> Verdict:
    """Data-free claims (rule 1): *reproduced exactly* when the measured ``error`` is within ``tolerance``,
    otherwise *contradicted* (no budget or seed can explain a deterministic mismatch)."""
    err, tol = _finite([error, tolerance], "error and tolerance")
    if tol < 0 or err < 0:
        raise ValueError(f"error={error!r} and tolerance={tolerance!r} must be >= 0 (absolute values)")
    if err <= tol:
        return Verdict("reproduced exactly", f"measured {what} {err:.3g} ≤ tolerance {tol:.3g}")
    return Verdict("contradicted", f"measured {what} {err:.3g} exceeds the tolerance {tol:.3g}")


def value_verdict(measured: Interval, reported: float, *, paper_setup: bool = False) -> Verdict:
    """A reported number (e.g. 80.07 % top-1) against our measurement of the same quantity (rule 2b):
    *reproduced* when the reported value lies inside the interval, else *contradicted* at the paper's setup
    or *not reproduced at this budget* (fewer test images, another data set); one value without an
    interval is *inconclusive*."""
    if not isinstance(measured, Interval):
        raise ValueError(f"measured must be an Interval, got {type(measured).__name__}")
    (rep,) = _finite([reported], "reported")
    pct = f"{round(measured.level * 100):d} %"
    if not measured.has_interval:
        return Verdict(INCONCLUSIVE, f"n = {measured.n}: no interval around {measured.estimate:.2f}")
    span = f"[{measured.low:.2f}, {measured.high:.2f}]"
    if measured.contains(rep):
        return Verdict("reproduced", f"the reported {rep:g} lies inside the {pct} interval {span}")
    if paper_setup:
        return Verdict("contradicted", f"the reported {rep:g} lies outside the {pct} interval {span} at the paper's setup")
    return Verdict("not reproduced at this budget", f"the reported {rep:g} lies outside the {pct} interval {span}; "
                                                     "the setup differs from the paper's")


def not_verifiable(why: str) -> Verdict:
    """Rule 6: the data, assets or hardware the claim needs are absent; ``why`` says which."""
    if not isinstance(why, str) or not why.strip():
        raise ValueError("not_verifiable needs the reason (which data, asset or hardware is missing)")
    return Verdict("not verifiable here", why)
