"""Power analysis of a paired comparison from run records (issue #28, docs/study-design.md).

A comparison of two cells is scored per image on one test split by several seeds. Its estimate
(``stats.paired_effect``) has the variance

    Var(Δ̂) = σ²_seed / S + σ²_image / N + σ²_residual / (S · N)

with ``S`` seeds, ``N`` test images, ``σ²_seed`` the training (seed-to-seed) variance of the difference,
``σ²_image`` the spread of the difference over test images and ``σ²_residual`` the rest (a run's coin flips on
single images). ``components_from_runs`` measures the three from the per-image records of finished runs
(``outcomes.test_outcomes``); ``predict`` gives the 95 % half-width and the minimum detectable effect at
80 % power of any other (S, N) from them; ``design_table`` tabulates a grid, with the wall time of a design
from a measured throughput (``run_seconds``). The components depend on the training budget (images per
class, epochs): measure them at each budget the design considers.

All variances are of fractions (0/1 outcomes); half-widths and effects are returned in points (× 100).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import pandas as pd
from scipy import stats as _sp

from micronet_lib.report.stats import LEVEL, EffectComponents, effect_components
from micronet_lib.train.outcomes import stack_correct, test_outcomes

__all__ = ["POWER", "Prediction", "assumed_components", "components_from_outcomes", "components_from_runs", "predict", "seeds_needed",
           "seed_variance_upper", "run_seconds", "design_table"]

POWER = 0.80  # the power at which a minimum detectable effect is stated


@dataclass(frozen=True)
class Prediction:
    """What a design of ``seeds`` × ``images`` gives: the standard error, the ``level`` half-width and the
    minimum detectable effect at ``power`` (two-sided test at 1 − level), all in points."""

    seeds: int
    images: int
    se: float
    df: float
    half_width: float
    mde: float
    level: float = LEVEL
    power: float = POWER


def assumed_components(*, var_seed: float, var_image: float, var_residual: float, seeds: int = 2,
                       images: int = 10_000) -> EffectComponents:
    """Components given directly (fractions²), e.g. a training variance taken from elsewhere or a range of
    them: the mean squares a ``seeds`` × ``images`` design would have in expectation."""
    if min(var_seed, var_image, var_residual) < 0:
        raise ValueError("variance components must be >= 0")
    return EffectComponents(0.0, seeds, images, images * var_seed + var_residual, seeds * var_image + var_residual,
                            var_residual)


def components_from_outcomes(treatment: Mapping[int, "object"], baseline: Mapping[int, "object"]) -> EffectComponents:
    """Components from two ``{seed: outcomes.Outcomes}`` maps (the seeds both arms have)."""
    shared = sorted(set(treatment) & set(baseline))
    if len(shared) < 2:
        raise ValueError(f"measuring training variance needs >= 2 seeds in both arms; shared seeds: {shared}")
    both = stack_correct([treatment[s] for s in shared] + [baseline[s] for s in shared])
    return effect_components(both[: len(shared)], both[len(shared):])


def components_from_runs(treatment: Sequence[Mapping], baseline: Sequence[Mapping]) -> EffectComponents:
    """Components from the summaries of two arms' finished runs, paired by their config's seed; per-image
    outcomes come from each run's record (computed from its checkpoint once when absent)."""
    def by_seed(summaries):
        return {int(s["config"]["seed"]): test_outcomes(s) for s in summaries}

    return components_from_outcomes(by_seed(treatment), by_seed(baseline))


def _var_and_df(c: EffectComponents, seeds: int, images: int, var_seed: float | None = None) -> tuple[float, float]:
    vs = c.var_seed if var_seed is None else var_seed
    vi, ve = c.var_image, c.var_residual
    s, n = seeds, images
    var = vs / s + vi / n + ve / (s * n)
    # Satterthwaite df of the moment estimate at this design, from the mean squares it would have.
    terms = [((n * vs + ve) / (s * n), s - 1), ((s * vi + ve) / (s * n), n - 1), (ve / (s * n), (s - 1) * (n - 1))]
    denom = sum(t * t / df for t, df in terms if df > 0)
    return var, (var * var / denom if denom > 0 else math.inf)


def predict(c: EffectComponents, *, seeds: int, images: int, level: float = LEVEL, power: float = POWER,
            var_seed: float | None = None) -> Prediction:
    """Half-width and MDE of a design with ``seeds`` seeds and ``images`` test images, from ``c`` (measured
    on any design). ``var_seed`` replaces the measured σ²_seed (e.g. ``seed_variance_upper``)."""
    for name, v in (("seeds", seeds), ("images", images)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 2:
            raise ValueError(f"{name}={v!r} must be an integer >= 2")
    if not 0 < level < 1 or not 0 < power < 1:
        raise ValueError(f"level={level!r} and power={power!r} must lie strictly between 0 and 1")
    var, df = _var_and_df(c, seeds, images, var_seed)
    se = 100 * math.sqrt(var)
    t_half = float(_sp.t.ppf(0.5 + level / 2, df))
    return Prediction(seeds, images, se, df, t_half * se, (t_half + float(_sp.t.ppf(power, df))) * se, level, power)


def seed_variance_upper(c: EffectComponents, *, confidence: float = 0.8) -> float:
    """A one-sided ``confidence`` upper bound on σ²_seed (chi-square on the seed mean square's S − 1 df): with
    few pilot seeds the point estimate is itself noisy, and a design sized on it may fall short."""
    if c.seeds < 2:
        raise ValueError("one seed carries no information about training variance")
    ms_upper = (c.seeds - 1) * c.ms_seed / float(_sp.chi2.ppf(1 - confidence, c.seeds - 1))
    return max(0.0, (ms_upper - c.ms_residual) / c.images)


def seeds_needed(c: EffectComponents, target_half_width: float, *, images: int, level: float = LEVEL,
                 var_seed: float | None = None, max_seeds: int = 1000) -> int | None:
    """The fewest seeds whose predicted half-width is ≤ ``target_half_width`` points with ``images`` test
    images; None when even ``max_seeds`` do not reach it (the image term alone is wider)."""
    for s in range(2, max_seeds + 1):
        if predict(c, seeds=s, images=images, level=level, var_seed=var_seed).half_width <= target_half_width:
            return s
    return None


def run_seconds(*, train_images: int, epochs: int, eval_images_per_epoch: int, outcome_images: int,
                train_img_per_s: float, eval_img_per_s: float) -> float:
    """Wall time of one run from measured throughputs: the epochs' training passes, their per-epoch
    evaluation (validation, BN re-estimation, test curve) and the final scoring of every test image."""
    for name, v in (("train_img_per_s", train_img_per_s), ("eval_img_per_s", eval_img_per_s)):
        if not v > 0:
            raise ValueError(f"{name}={v!r} must be a positive throughput (images per second)")
    return epochs * (train_images / train_img_per_s + eval_images_per_epoch / eval_img_per_s) \
        + outcome_images / eval_img_per_s


def design_table(components: Mapping[str, EffectComponents], *, seeds: Sequence[int], images: Sequence[int],
                 level: float = LEVEL, power: float = POWER):
    """One row per (budget, seeds, images): predicted SE, half-width and MDE in points, also with the
    pessimistic (80 % upper bound) seed variance."""
    rows = []
    for budget, c in components.items():
        upper = seed_variance_upper(c) if c.seeds >= 2 else math.nan
        for s in seeds:
            for n in images:
                p = predict(c, seeds=s, images=n, level=level, power=power)
                q = predict(c, seeds=s, images=n, level=level, power=power, var_seed=upper)
                rows.append({"budget": budget, "seeds": s, "test images": n, "SE (points)": round(p.se, 3),
                             "95 % half-width (points)": round(p.half_width, 2), "MDE 80 % (points)": round(p.mde, 2),
                             "half-width, pessimistic σ²_seed (points)": round(q.half_width, 2)})
    return pd.DataFrame(rows)
