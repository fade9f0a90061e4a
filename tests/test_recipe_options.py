"""The recipe options of issue #16: the stage's label-smoothing ε, ``prune_ties`` in training, TF32 off."""

from __future__ import annotations

import pytest
import torch

from micronet_lib.cli import main
from micronet_lib.train import TrainConfig, engine


# ------------------------------------------------------------------------------- ε per stage (docs/method.md §6.2, §8.4)
def test_pruning_stage_with_weighted_ls_uses_epsilon_0_1():
    prune = TrainConfig.from_profile("paper", loss="wls", prune_rates=(15.0, 30.0, 45.0, 60.0))
    assert prune.stage == "prune" and prune.loss_epsilon == 0.1
    pretrain = TrainConfig.from_profile("paper", loss="wls")
    assert pretrain.stage == "train" and pretrain.loss_epsilon == 0.3
    assert TrainConfig.from_profile("paper", loss="ls", prune_rates=(15.0,) * 4).loss_epsilon == 0.1
    assert TrainConfig.from_profile("paper").loss_epsilon == 0.0  # cross-entropy
    # explicit ε overrides either stage, is a listed deviation and is stored with the config
    override = prune.replace(epsilon=0.3)
    assert override.loss_epsilon == 0.3 and any(d.startswith("epsilon=0.3") for d in override.deviations)
    assert prune.to_dict(with_derived=True)["loss_epsilon"] == 0.1
    assert TrainConfig.from_dict(prune.to_dict(with_derived=True)) == prune


def test_fit_builds_the_loss_with_the_stage_epsilon(monkeypatch, tmp_path):
    import micronet_lib.regularizers as regularizers

    seen = {}

    class Built(Exception):
        pass

    def spy(kind, *, num_classes, epsilon=None, **_):
        seen.update(kind=kind, epsilon=epsilon)
        raise Built

    monkeypatch.setattr(regularizers, "make_loss", spy)
    config = TrainConfig.from_profile("smoke", loss="wls", prune_rates=(10.0, 20.0), train_per_class=2, test_per_class=1,
                                      val_per_class=1)
    with pytest.raises(Built):
        engine.fit(config, progress=False, runs_dir=tmp_path)
    assert seen == dict(kind="wls", epsilon=0.1)


def test_epsilon_with_cross_entropy_is_rejected():
    with pytest.raises(ValueError, match="epsilon=0.2 has no effect with loss='ce'"):
        TrainConfig.from_profile("paper", epsilon=0.2)


# ------------------------------------------------------------------------------- ties in training (docs/method.md §8.2)
def test_prune_ties_is_a_training_option_and_rejected_without_pruning():
    from micronet_lib.pruning.criteria import TIE_RULES

    config = TrainConfig.from_profile("smoke", prune_rates=(10.0, 20.0), prune_ties="threshold")
    assert config.prune_ties == "threshold" and any(d.startswith("prune_ties='threshold'") for d in config.deviations)
    with pytest.raises(ValueError, match="prune_ties='threshold' has no effect without prune_rates"):
        TrainConfig.from_profile("smoke", prune_ties="threshold")
    with pytest.raises(ValueError, match="prune_ties='nearest' is not allowed"):
        TrainConfig.from_profile("smoke", prune_rates=(10.0, 20.0), prune_ties="nearest")
    for rule in TIE_RULES:  # the config accepts exactly the criterion's rules
        TrainConfig.from_profile("smoke", prune_rates=(10.0, 20.0), prune_ties=rule)


@pytest.mark.parametrize("argv, ties", [(["--ties", "threshold"], "threshold"), ([], "exact"),
                                        (["--set", "prune_ties=threshold"], "threshold")])
def test_cli_prune_schedule_passes_ties(argv, ties, monkeypatch, capsys):
    import micronet_lib.train as train

    seen = []
    monkeypatch.setattr(train, "run_or_load", lambda config: seen.append(config) or {"status": "finished"})
    assert main(["prune", "--from", "micronet_v2_pr_15", "--max-rate", "60", "--profile", "smoke", "--device", "cpu",
                 *argv]) == 0, capsys.readouterr().err
    assert seen[0].prune_ties == ties and seen[0].prune_rates == (30.0, 60.0)


# ------------------------------------------------------------------------------- fp32 means fp32 (docs/method.md §5.8)
@pytest.fixture
def restore_tf32():
    from micronet_lib.accel.tf32 import tf32_flags

    before = tf32_flags()
    yield before
    from micronet_lib.accel import tf32

    tf32._set(before)
    assert tf32_flags() == before


def test_fp32_mode_sets_and_restores_the_backend_flags(restore_tf32):
    from micronet_lib.accel.tf32 import fp32_mode, tf32_flags

    with fp32_mode() as inside:
        assert inside == tf32_flags() and set(inside.values()) == {"ieee"}
        if hasattr(torch.backends.cudnn, "conv"):
            assert torch.backends.cudnn.conv.fp32_precision == "ieee"
            assert torch.backends.cuda.matmul.fp32_precision == "ieee"
    assert tf32_flags() == restore_tf32
    with pytest.raises(RuntimeError, match="boom"), fp32_mode(allow_tf32=True) as inside:
        assert set(inside.values()) == {"tf32"}
        raise RuntimeError("boom")
    assert tf32_flags() == restore_tf32  # restored after an error too
    with pytest.raises(ValueError, match="allow_tf32"):
        with fp32_mode(allow_tf32="no"):
            pass


@pytest.mark.parametrize("allow, expected", [(False, "ieee"), (True, "tf32")])
def test_fit_runs_with_tf32_off_unless_asked(allow, expected, restore_tf32, monkeypatch, tmp_path):
    from micronet_lib.accel.tf32 import tf32_flags

    seen = {}

    class Stop(Exception):
        pass

    def spy(config):
        seen.update(tf32_flags())
        raise Stop

    monkeypatch.setattr(engine, "prepare_data", spy)
    config = TrainConfig.from_profile("smoke", allow_tf32=allow)
    with pytest.raises(Stop):
        engine.fit(config, progress=False, runs_dir=tmp_path)
    assert set(seen.values()) == {expected}  # what a CUDA run of fit would use
    assert tf32_flags() == restore_tf32  # fit leaves the process as it found it
    assert config.to_dict()["allow_tf32"] is allow  # recorded with the run's config


@pytest.mark.parametrize("allow, expected", [(False, "ieee"), (True, "tf32")])
def test_evaluate_runs_with_tf32_off_unless_asked(allow, expected, restore_tf32):
    from micronet_lib.data import load_dataset
    from micronet_lib.evaluate import evaluate
    from micronet_lib.accel.tf32 import tf32_flags

    ds = load_dataset("synthetic", synthetic_train_per_class=1, synthetic_test_per_class=2)
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append(tf32_flags())
            return torch.zeros(len(x), ds.num_classes)

    evaluate(Probe(), ds, "test", progress=False, allow_tf32=allow)
    assert seen and all(set(flags.values()) == {expected} for flags in seen)
    assert tf32_flags() == restore_tf32
