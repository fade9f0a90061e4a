"""TrainConfig validation, profiles, overrides, and the lr schedule (docs/method.md §5.4, §5.8)."""

from __future__ import annotations

import math

import pytest

from micronet_lib.train import TrainConfig, cosine_lr, lr_at, parse_overrides, step_lr

LR_TOL = 1e-6  # docs/method.md §5.4 prints the sample lrs to 4-6 significant digits


def test_paper_profile_is_the_authors_recipe():
    c = TrainConfig.from_profile("paper")
    # docs/method.md §5.8, "authors' script default" column.
    assert (c.model, c.lr, c.momentum, c.nesterov, c.weight_decay, c.decay_1d) == ("micronet_v2", 0.1, 0.9, True, 1e-5, True)
    assert (c.cycles, c.epochs_per_cycle, c.lr_min, c.batch_size) == (4, 150, 5e-4, 128)
    assert (c.augment, c.mix, c.mix_alpha, c.mix_prob) == ("fastaa4x", "cutmix", 1.0, 1.0)
    assert (c.ortho_coef, c.ortho_layers, c.loss, c.dropout, c.bn_momentum) == (0.7, "all_1x1", "ce", 0.3, 0.01)
    assert (c.precision, c.select_on, c.bn_recalibrate_images) == ("fp32", "test", 0)
    assert c.deviations == []
    assert "TEST" in c.selection_note


@pytest.mark.parametrize("name", ["cpu", "smoke"])
def test_reduced_profiles_name_every_deviation(name):
    c = TrainConfig.from_profile(name)
    paper = TrainConfig.from_profile("paper")
    changed = {k for k, v in c.to_dict().items() if v != paper.to_dict()[k]} - {"profile"}
    named = {d.split("=", 1)[0] for d in c.deviations}
    assert changed == named
    assert all(": override" not in d for d in c.deviations)  # every profile deviation has a reason
    assert c.select_on == "val" and c.val_per_class and c.bn_recalibrate_images > 0


def test_override_marks_deviation_and_changes_hash():
    base = TrainConfig.from_profile("paper")
    c = base.with_overrides(["lr=0.05"])
    assert c.lr == 0.05 and "lr=0.05 (authors: 0.1): override" in c.deviations
    assert c.config_hash() != base.config_hash()
    assert TrainConfig.from_dict(c.to_dict(with_derived=True)) == c


def test_overrides_are_parsed_from_annotations():
    v = parse_overrides(["epochs_per_cycle=3", "nesterov=false", "prune_rates=15,30,45,60", "init_from=none",
                         "epsilon=0.1", "channels_last=yes", "dataset=imagefolder:a=b"])
    assert v == dict(epochs_per_cycle=3, nesterov=False, prune_rates=(15.0, 30.0, 45.0, 60.0), init_from=None,
                     epsilon=0.1, channels_last=True, dataset="imagefolder:a=b")


@pytest.mark.parametrize(
    "bad, words",
    [
        (["bogus=1"], ["bogus", "known keys"]),
        (["epochs_per_cycle=two"], ["epochs_per_cycle", "'two'", "int"]),
        (["nesterov=maybe"], ["nesterov", "maybe", "true, false"]),
        (["lr"], ["key=value"]),
    ],
)
def test_bad_overrides_raise_naming_key_and_value(bad, words):
    with pytest.raises(ValueError) as err:
        TrainConfig.from_profile("smoke").with_overrides(bad)
    for w in words:
        assert w in str(err.value)


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("loss", "focal", ["loss", "'focal'", "'wls'"]),
        ("precision", "int8", ["precision", "'int8'", "'bf16'"]),
        ("mix", "cutout", ["mix", "'cutout'", "'cutmix'"]),
        ("select_on", "train", ["select_on", "'train'", "'val'"]),
        ("batch_size", 0, ["batch_size", "0", "> 0"]),
        ("dropout", 1.5, ["dropout", "1.5", "[0, 1]"]),
        ("lr_min", 0.5, ["lr_min", "0.5", "lr"]),
        ("prune_rates", (15.0, 30.0), ["prune_rates", "cycles=4"]),
        ("prune_rates", (30.0, 15.0, 45.0, 60.0), ["prune_rates", "non-decreasing"]),
    ],
)
def test_bad_values_raise_naming_field_value_and_allowed(field, value, words):
    with pytest.raises(ValueError) as err:
        TrainConfig.from_profile("paper", **{field: value})
    for w in words:
        assert w in str(err.value)


def test_unknown_keyword_and_profile_raise():
    with pytest.raises(ValueError, match="unknown TrainConfig key 'epochs'"):
        TrainConfig.from_profile("paper", epochs=3)
    with pytest.raises(ValueError, match="unknown training profile 'tpu'.*cpu, gpu, paper, smoke"):
        TrainConfig.from_profile("tpu")
    with pytest.raises(ValueError, match="select_on='val' needs a validation split"):
        TrainConfig.from_profile("paper", select_on="val")


# --- schedule: docs/method.md §5.4 sample values (T = 150, η0 = 0.1, η_min = 5e-4)
@pytest.mark.parametrize("epoch, expected", [(0, 0.099989), (74, 0.05025), (149, 0.0005)])
def test_cosine_matches_paper_samples(epoch, expected):
    c = TrainConfig.from_profile("paper")
    assert lr_at(c, epoch) == pytest.approx(expected, abs=LR_TOL)


def test_cosine_is_the_step_at_epoch_start_formula_and_restarts():
    c = TrainConfig.from_profile("paper")
    for e in (0, 1, 37, 75, 148, 149):
        formula = 5e-4 + 0.5 * (0.1 - 5e-4) * (1 + math.cos(math.pi * (e + 1) / 150))
        assert lr_at(c, e) == pytest.approx(formula, rel=1e-12)
    lrs = [lr_at(c, e) for e in range(150)]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))  # strictly decreasing inside a cycle
    with pytest.raises(ValueError, match="outside the cycle"):
        cosine_lr(150, lr=0.1, lr_min=5e-4, epochs_per_cycle=150)


def test_step_schedule_matches_multistep_at_epoch_start():
    assert [step_lr(e, lr=0.1, milestones=(100, 150), gamma=0.1) for e in (0, 98, 99, 148, 149)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001]
    )
