"""The paired seed × image estimator (stats.paired_effect) and the power analysis built on it (power.py),
on constructed per-image outcomes with a known answer (issue #28)."""

import math

import numpy as np
import pytest

from micronet_lib.report import power
from micronet_lib.report.outcomes import Outcomes, decode_classes, encode_classes, stack_correct
from micronet_lib.report.stats import effect_components, paired_effect


def _simulate(rng, seeds, images, delta, seed_spread):
    """Two arms on the same images: image difficulty q_i, an image-level effect with mean ``delta`` and a
    per-seed shift with mean 0, so E[treatment − baseline] = delta exactly (in the population of images)."""
    q = rng.uniform(0.3, 0.7, images)
    d_i = delta + rng.choice([-0.2, 0.0, 0.2], images)
    a_s = rng.uniform(-seed_spread, seed_spread, seeds)
    base = rng.random((seeds, images)) < q
    treat = rng.random((seeds, images)) < (q + d_i)[None, :] + a_s[:, None]
    return treat, base


def _maps(treat, base):
    return {s: treat[s] for s in range(len(treat))}, {s: base[s] for s in range(len(base))}


@pytest.mark.parametrize("seeds,spread", [(3, 0.05), (6, 0.08)])
def test_paired_effect_covers_the_known_effect_about_95_percent(seeds, spread):
    rng = np.random.default_rng(7)
    hits = 0
    trials = 300
    for _ in range(trials):
        iv = paired_effect(*_maps(*_simulate(rng, seeds, 800, 0.03, spread)))
        hits += iv.low <= 3.0 <= iv.high
    assert 0.91 <= hits / trials <= 0.985  # binomial sd of the coverage at 300 trials: 1.3 points


def test_paired_effect_counts_training_noise_that_a_per_image_interval_would_miss():
    rng = np.random.default_rng(3)
    treat, base = _simulate(rng, 4, 2000, 0.0, 0.15)  # large seed-to-seed shifts
    iv = paired_effect(*_maps(treat, base))
    naive = 100 * 1.96 * np.std(treat.astype(float) - base, ddof=1) / np.sqrt(treat.size)
    assert iv.half_width > 2 * naive
    comp = effect_components(treat, base)
    # a_s uniform on ±0.15 has variance 0.15² / 3 = 0.0075; four seeds estimate it loosely
    assert 0.001 < comp.var_seed < 0.03


def test_effect_components_recover_planted_components():
    rng = np.random.default_rng(11)
    s, n = 40, 4000
    a = rng.normal(0, 0.03, s)
    treat, base = _simulate(rng, s, n, 0.0, 0.0)
    treat = rng.random((s, n)) < np.clip(treat * 0.0 + 0.5 + a[:, None], 0, 1)  # seed effect only on treatment
    base = rng.random((s, n)) < 0.5
    c = effect_components(treat, base)
    assert c.var_seed == pytest.approx(np.var(a, ddof=1), rel=0.35)
    assert c.var_image < 0.002  # no image effect was planted
    assert c.var_residual == pytest.approx(0.5, abs=0.02)  # two independent fair coins: Var(t − b) = 0.5


def test_paired_effect_variance_equals_mean_square_formula():
    rng = np.random.default_rng(5)
    treat, base = _simulate(rng, 5, 300, 0.05, 0.05)
    c = effect_components(treat, base)
    var, df = c.variance_of_mean()
    # the unbiased moment estimate, unless a component clipped at 0 makes the clipped sum larger
    unclipped = (c.ms_seed + c.ms_image - c.ms_residual) / (5 * 300)
    clipped = c.var_seed / 5 + c.var_image / 300 + c.var_residual / (5 * 300)
    assert var == pytest.approx(max(unclipped, clipped))
    assert clipped >= unclipped - 1e-15
    assert 4 <= df <= 300


def test_paired_effect_refuses_unpaired_or_single_seed_input():
    t = {0: np.ones(10, bool)}
    with pytest.raises(ValueError, match="no seed in common"):
        paired_effect(t, {1: np.ones(10, bool)})
    with pytest.raises(ValueError, match="same test images"):
        paired_effect({0: np.ones(10, bool)}, {0: np.ones(9, bool)})
    assert not paired_effect(t, {0: np.zeros(10, bool)}).has_interval  # one seed: no interval


def test_prediction_reproduces_the_measured_half_width_at_the_measured_design():
    rng = np.random.default_rng(2)
    treat, base = _simulate(rng, 5, 1000, 0.02, 0.05)
    c = effect_components(treat, base)
    iv = paired_effect(*_maps(treat, base))
    p = power.predict(c, seeds=5, images=1000)
    assert p.half_width == pytest.approx(iv.half_width, rel=0.02)
    assert p.mde > p.half_width  # 80 % power needs more than the half-width


def test_more_seeds_narrow_and_the_image_term_sets_a_floor():
    rng = np.random.default_rng(4)
    c = effect_components(*_simulate(rng, 4, 2000, 0.0, 0.05))
    widths = [power.predict(c, seeds=s, images=2000).half_width for s in (2, 4, 16, 256)]
    assert widths == sorted(widths, reverse=True)
    floor = 100 * 1.96 * math.sqrt(c.var_image / 2000)
    assert widths[-1] >= floor
    need = power.seeds_needed(c, widths[2], images=2000)
    assert need is not None and need <= 16
    assert power.seeds_needed(c, floor * 0.5, images=2000, max_seeds=50) is None


def test_pessimistic_seed_variance_is_larger_and_design_table_has_every_cell():
    rng = np.random.default_rng(6)
    c = effect_components(*_simulate(rng, 3, 1000, 0.0, 0.05))
    assert power.seed_variance_upper(c) >= c.var_seed
    table = power.design_table({"b": c}, seeds=[3, 6], images=[1000, 10000])
    assert len(table) == 4
    assert (table["half-width, pessimistic σ²_seed (points)"] >= table["95 % half-width (points)"]).all()


def test_run_seconds_adds_training_evaluation_and_final_scoring():
    sec = power.run_seconds(train_images=1000, epochs=10, eval_images_per_epoch=400, outcome_images=10000,
                            train_img_per_s=100.0, eval_img_per_s=1000.0)
    assert sec == pytest.approx(10 * (10 + 0.4) + 10)
    with pytest.raises(ValueError, match="throughput"):
        power.run_seconds(train_images=1, epochs=1, eval_images_per_epoch=0, outcome_images=0, train_img_per_s=0,
                          eval_img_per_s=1)


def test_outcomes_round_trip_and_pairing_check():
    pred, labels = np.array([3, 1, 2, 9, 0]), np.array([3, 1, 0, 9, 1])
    o = Outcomes(pred, labels, "x:test5#abc")
    back = Outcomes.from_record(o.to_record())
    assert (back.predicted == pred).all() and back.top1 == pytest.approx(60.0)
    assert (decode_classes(encode_classes(np.arange(256))) == np.arange(256)).all()
    with pytest.raises(ValueError, match="0..255"):
        encode_classes(np.array([256]))
    with pytest.raises(ValueError, match="different test images"):
        stack_correct([o, Outcomes(pred, labels, "y:test5#def")])
    c = power.components_from_outcomes({0: o, 1: o}, {0: back, 1: Outcomes(labels, labels, o.test_id)})
    assert c.seeds == 2 and c.images == 5


def test_assumed_components_round_trip():
    c = power.assumed_components(var_seed=1e-4, var_image=0.05, var_residual=0.1, seeds=3, images=5000)
    assert c.var_seed == pytest.approx(1e-4) and c.var_image == pytest.approx(0.05) and c.var_residual == pytest.approx(0.1)
    p = power.predict(c, seeds=3, images=5000)
    assert p.se == pytest.approx(100 * math.sqrt(1e-4 / 3 + 0.05 / 5000 + 0.1 / 15000))


def test_components_from_constructed_run_records(tmp_path):
    """Run records only (no checkpoint): the per-image outcomes are read from each run's derived record, and
    the measured components match those of the same outcomes given directly."""
    import json

    from micronet_lib.report.outcomes import NAME
    from micronet_lib.train.config import TrainConfig

    rng = np.random.default_rng(8)
    treat, base = _simulate(rng, 3, 400, 0.05, 0.05)
    labels = rng.integers(0, 10, 400)

    def record(seed, correct, arm):
        config = TrainConfig.from_profile("smoke", seed=seed, mix=arm)
        run_dir = tmp_path / f"{arm}{seed}"
        (run_dir / "derived").mkdir(parents=True)
        predicted = np.where(correct, labels, (labels + 1) % 10)
        o = Outcomes(predicted, labels, "synthetic:test400#abc")
        mode = {"precision": "fp32", "memory_format": "contiguous"}
        key = {"checkpoint": "best.pt", "split": "test", "subset": "all", **mode}
        (run_dir / "derived" / f"{NAME}.json").write_text(json.dumps({"key": key, "value": o.to_record()}))
        return {"run_id": run_dir.name, "run_dir": str(run_dir), "config": config.to_dict(),
                "execution": {"eval": {"mode": mode}}}

    t_runs = [record(s, treat[s], "cutmix") for s in range(3)]
    b_runs = [record(s, base[s], "none") for s in range(3)]
    c = power.components_from_runs(t_runs, b_runs)
    direct = effect_components(treat, base)
    assert (c.seeds, c.images) == (3, 400)
    assert c.var_seed == pytest.approx(direct.var_seed) and c.var_residual == pytest.approx(direct.var_residual)
