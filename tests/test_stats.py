"""Intervals against known values, and the verdict rules of docs/verdicts.md on constructed numbers (issue #11)."""

from __future__ import annotations

import math

import pytest

from micronet_lib.report.stats import (
    VERDICTS, Interval, exact_verdict, mean_interval, value_verdict, not_verifiable, paired_difference, separated_best, verdict,
    wilson_interval,
)

# t_{0.975, 2} = 4.302652729911275 and t_{0.975, 4} = 2.7764451051977987 (any t table).
T975_DF2 = 4.302652729911275
T975_DF4 = 2.7764451051977987


def test_t_interval_of_three_seeds_matches_the_t_table():
    iv = mean_interval([1.0, 2.0, 3.0])  # mean 2, sd 1
    half = T975_DF2 / math.sqrt(3)
    assert iv.estimate == pytest.approx(2.0)
    assert (iv.low, iv.high) == pytest.approx((2 - half, 2 + half), abs=1e-9)
    assert iv.n == 3 and iv.has_interval and iv.contains(0.0) and not iv.contains(4.5)


def test_t_interval_other_level_and_size():
    xs = [10.0, 12.0, 11.0, 13.0, 9.0]  # mean 11, sd sqrt(2.5)
    iv = mean_interval(xs)
    assert iv.half_width == pytest.approx(T975_DF4 * math.sqrt(2.5) / math.sqrt(5), rel=1e-12)
    narrower = mean_interval(xs, level=0.5)
    assert narrower.half_width < iv.half_width


def test_one_seed_has_no_interval():
    iv = mean_interval([31.6])
    assert iv.estimate == 31.6 and not iv.has_interval and math.isnan(iv.low)
    assert "no interval" in iv.text()


def test_paired_difference_pairs_by_seed_and_cancels_seed_noise():
    base = {0: 30.0, 1: 40.0, 2: 50.0}
    treat = {0: 31.0, 1: 41.2, 2: 50.8, 7: 99.0}  # seed 7 has no partner: left out
    d = paired_difference(treat, base)
    assert d.n == 3 and d.estimate == pytest.approx(1.0)
    diffs = [1.0, 1.2, 0.8]  # sd 0.2
    assert d.half_width == pytest.approx(T975_DF2 * 0.2 / math.sqrt(3))
    assert d.low > 0  # paired: separated, although the unpaired arms overlap widely
    assert mean_interval(list(treat.values())[:3]).contains(mean_interval(list(base.values())).estimate)
    assert sum(diffs) / 3 == pytest.approx(d.estimate)
    with pytest.raises(ValueError, match="no seed in common"):
        paired_difference({0: 1.0}, {1: 1.0})


def test_wilson_interval_known_values():
    # 0 of 10: the upper end is z^2 / (n + z^2) in closed form.
    z2 = 1.959963984540054 ** 2
    iv = wilson_interval(0, 10)
    assert iv.low == 0.0 and iv.high == pytest.approx(100 * z2 / (10 + z2), rel=1e-12)
    # 16 of 20 (the README of the sample images: "roughly 56–94 %"); Wilson gives [58.398, 91.934] (by hand: centre 0.75166, half 0.16768).
    iv = wilson_interval(16, 20)
    assert iv.estimate == 80.0
    assert (iv.low, iv.high) == pytest.approx((58.398, 91.934), abs=1e-3)
    with pytest.raises(ValueError):
        wilson_interval(21, 20)


def _iv(lo, hi, n=3):
    return Interval((lo + hi) / 2, lo, hi, n, "constructed")


def test_separated_best_only_when_clear_of_every_other():
    assert separated_best({"a": _iv(5, 7), "b": _iv(1, 4), "c": _iv(0, 3)}) == "a"
    assert separated_best({"a": _iv(5, 7), "b": _iv(1, 5.5)}) is None  # overlaps
    assert separated_best({"a": _iv(5, 7), "b": Interval(1, math.nan, math.nan, 1, "one seed")}) is None
    assert separated_best({"a": _iv(5, 7), "b": _iv(1, 4)}, higher_is_better=False) == "b"


@pytest.mark.parametrize("lo,hi,direction,paper,expected", [
    (0.5, 2.0, +1, False, "reproduced"),
    (-2.0, -0.5, -1, False, "reproduced"),           # the claim predicts a decrease
    (-1.0, 2.0, +1, False, "inconclusive, leaning for"),     # estimate +0.5
    (-1.0, 2.0, +1, True, "inconclusive, leaning for"),
    (-2.0, 1.0, +1, False, "inconclusive, leaning against"),  # estimate −0.5: never read as support
    (-2.0, 1.0, -1, False, "inconclusive, leaning for"),      # the claim predicts a decrease
    (-1.0, 1.0, +1, False, "inconclusive"),                   # estimate exactly 0
    (-3.0, -0.1, +1, False, "not reproduced at this budget"),
    (-3.0, -0.1, +1, True, "contradicted"),
    (0.1, 3.0, -1, True, "contradicted"),
])
def test_verdict_rules_on_constructed_intervals(lo, hi, direction, paper, expected):
    v = verdict(_iv(lo, hi), direction=direction, paper_setup=paper)
    assert v.label == expected and v.label in VERDICTS
    assert "consistent" not in v.label + v.reason  # issue #32: the estimate's sign is never hidden behind it
    assert f"[{lo:.2f}, {hi:.2f}]" in v.reason


def test_verdict_one_seed_is_inconclusive_and_bad_direction_raises():
    assert verdict(Interval(3.0, math.nan, math.nan, 1, "one seed")).label == "inconclusive, leaning for"
    assert verdict(Interval(-3.0, math.nan, math.nan, 1, "one seed")).label == "inconclusive, leaning against"
    with pytest.raises(ValueError, match="direction"):
        verdict(_iv(0, 1), direction=2)


def test_exact_and_not_verifiable_verdicts():
    assert exact_verdict(3e-6, 1e-4, what="max |Δ logit|").label == "reproduced exactly"
    v = exact_verdict(2e-3, 1e-4)
    assert v.label == "contradicted" and "exceeds" in v.reason
    assert not_verifiable("needs CIFAR-100 pickles").label == "not verifiable here"
    with pytest.raises(ValueError):
        not_verifiable("  ")


def test_value_verdict_reported_number_inside_or_outside_the_interval():
    measured = wilson_interval(16, 20)  # [58.4, 91.9] %
    assert value_verdict(measured, 80.07).label == "reproduced"
    assert value_verdict(measured, 95.0).label == "not reproduced at this budget"
    assert value_verdict(measured, 95.0, paper_setup=True).label == "contradicted"
    assert value_verdict(mean_interval([80.0]), 80.07).label == "inconclusive"
