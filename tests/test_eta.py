"""micronet_lib.train.eta (issue #12): what a training cell says before it starts."""

from __future__ import annotations

import pytest

from micronet_lib.train import eta
from micronet_lib import experiments as ex
from micronet_lib.pipeline import check_params
from micronet_lib.train.runs import run_dir_for, write_summary


@pytest.fixture
def smoke_configs(tmp_path, monkeypatch):
    monkeypatch.setenv("MICRONET_RUNS", str(tmp_path / "runs"))
    params = check_params({"seeds": [0], "comparison_seeds": 1}, profile="smoke")
    return [ex.augment_config(params, s, seed=0) for s in ("baseline", "cutout", "fastaa")]


def test_estimate_counts_the_runs_left_and_their_images(smoke_configs):
    est = eta.estimate_training(smoke_configs)
    # smoke: 10 synthetic classes x 16 train images (val carved out of the extra 4); one copy per epoch
    assert (est.runs, est.to_train) == (3, 3)
    assert est.images == sum(c.total_epochs for c in smoke_configs) * 160
    assert est.images_per_second > 0 and est.seconds == pytest.approx(est.images / est.images_per_second)
    assert str(est).startswith("3 of 3 run(s) to train under profile 'smoke': ≈ ")

    first = smoke_configs[0]  # a finished run is read back: it costs nothing
    write_summary(run_dir_for(first), {"status": "finished", "config": first.to_dict()})
    assert eta.is_finished(first) and not eta.is_finished(smoke_configs[1])
    est = eta.estimate_training(smoke_configs)
    assert (est.to_train, est.images) == (2, sum(c.total_epochs for c in smoke_configs[1:]) * 160)
    assert "(1 finished, read back)" in str(est)


def test_nothing_left_to_train_measures_nothing(smoke_configs):
    for c in smoke_configs:
        write_summary(run_dir_for(c), {"status": "finished", "config": c.to_dict()})
    est = eta.estimate_training(smoke_configs)
    assert est.to_train == 0 and est.seconds == 0 and "nothing to train" in str(est)


def test_announce_is_silent_in_headless_report_runs(smoke_configs, monkeypatch, capsys):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert eta.announce(smoke_configs) is None and capsys.readouterr().out == ""
    monkeypatch.delenv("TQDM_DISABLE")
    for c in smoke_configs:
        write_summary(run_dir_for(c), {"status": "finished", "config": c.to_dict()})
    assert eta.announce(smoke_configs).to_train == 0
    assert "0 of 3 run(s) to train" in capsys.readouterr().out


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="non-empty list of TrainConfig"):
        eta.estimate_training([])


def test_an_unreadable_summary_counts_as_not_finished(smoke_configs):
    # One helper (train.runs.finished_summary_or_none) for the ETA line and the sweep executors: a corrupt
    # summary.json is not finished there (run_or_load repairs or reports it), while finished_summary raises.
    from micronet_lib.experiments import sweeps as executors
    from micronet_lib.train import runs

    first = smoke_configs[0]
    run_dir_for(first).mkdir(parents=True)
    (run_dir_for(first) / "summary.json").write_text("{not json")
    with pytest.raises(ValueError, match="is corrupt"):
        runs.finished_summary(first)
    assert runs.finished_summary_or_none(first) is None and executors.finished_summary(first) is None
    assert not eta.is_finished(first)
