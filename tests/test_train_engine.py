"""fit(): learning, exact kill-and-resume, NaN stop, run_or_load caching, pruning cycles (docs/method.md §5, §8.4)."""

from __future__ import annotations

import json

import pytest
import torch

import micronet_lib.regularizers as regularizers
from micronet_lib.train import NonFiniteLossError, TrainConfig, fit, read_metrics, run_or_load, runs

CHANCE = 10.0  # 10 synthetic classes
LEARNED_MARGIN = 10.0  # points above chance the tiny run must reach on validation (measured: ~30-45 %)
PRUNE_TOL = 2e-3  # per-layer rounding of the kept count, summed over ~40 layers of a few thousand weights

# A tiny but complete recipe: 2 cycles × 2 epochs, CutMix, ortho 0.7, BN re-estimation, val selection,
# and pruning (0 % then 50 %) so the cycle boundary reloads the best weights under new masks (§8.4).
# Per-layer scope: a global threshold on a barely trained net removes the whole classifier (its init
# is N(0, 0.01²), docs/method.md §3.5), which is faithful but tests nothing.
TINY = dict(bn_recalibrate_images=128, prune_rates=(0.0, 50.0), prune_scope="layer")


def tiny(**changes) -> TrainConfig:
    return TrainConfig.from_profile("smoke", **{**TINY, **changes})


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One uninterrupted run, shared by the tests below (the expensive part of this file)."""
    root = tmp_path_factory.mktemp("runs")
    config = tiny()
    summary = fit(config, runs_dir=root, progress=False)
    return config, root, summary


def test_run_learns_and_logs_every_epoch(finished):
    config, root, summary = finished
    assert summary["status"] == "finished" and summary["epochs"] == config.total_epochs == 4
    assert summary["best_val_top1"] >= CHANCE + LEARNED_MARGIN
    history = read_metrics(summary["run_dir"])
    assert [(r["cycle"], r["epoch"]) for r in history] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    for r in history:  # the JSON line: lr, loss parts, train/val top-1/top-5, images/s, seconds
        for key in ("lr", "loss", "loss_cls", "loss_ortho", "train_top1", "train_top5", "val_top1", "val_top5",
                    "test_top1", "images_per_s", "seconds"):
            assert r[key] is not None
        assert r["loss"] == pytest.approx(r["loss_cls"] + config.ortho_coef * r["loss_ortho"], rel=1e-6)
    assert [r["lr"] for r in history[:2]] == [r["lr"] for r in history[2:]]  # warm restart per cycle
    assert history[-1]["loss"] < history[0]["loss"]
    stored = json.loads((root / config.config_hash() / "config.json").read_text())
    assert stored["deviations"] == config.deviations and "validation split" in stored["selection_note"]
    assert "run_dir" not in json.loads((root / config.config_hash() / "summary.json").read_text())


def test_pruning_cycles_reach_the_scheduled_sparsity(finished):
    from micronet_lib.models.checkpoints import load_checkpoint
    from micronet_lib.pruning import masked_modules, prunable_modules

    _, _, summary = finished
    model = load_checkpoint(f"{summary['run_dir']}/best.pt")  # the selected weights of the last cycle
    kept = total = 0
    for _, module in prunable_modules(model):
        kept += int(torch.count_nonzero(module.weight))
        total += module.weight.numel()
    assert 1 - kept / total == pytest.approx(0.50, abs=PRUNE_TOL)
    assert len(list(masked_modules(model))) == len(prunable_modules(model))


def test_kill_and_resume_equals_uninterrupted(finished, monkeypatch):
    config, _, reference = finished
    run_dir = reference["run_dir"].replace(reference["run_id"], "killed")
    calls = {"n": 0}
    original = runs.append_metrics

    def dying(run_dir_, record):
        original(run_dir_, record)
        calls["n"] += 1
        if calls["n"] == 3:  # cycle 2 epoch 1 logged, but killed before its checkpoint is written
            raise KeyboardInterrupt

    monkeypatch.setattr(runs, "append_metrics", dying)
    with pytest.raises(KeyboardInterrupt):
        fit(config, run_dir, progress=False)
    monkeypatch.setattr(runs, "append_metrics", original)
    assert runs.load_checkpoint(f"{run_dir}/last.pt")["epoch"] == 1  # end of cycle 1
    assert len(read_metrics(run_dir)) == 3

    resumed = fit(config, run_dir, progress=False)
    keys = [k for k in reference if k.startswith(("final_", "best_")) or k == "cycle_best"]
    assert {k: resumed[k] for k in keys} == {k: reference[k] for k in keys}  # exact, not approximate
    strip = lambda rows: [{k: v for k, v in r.items() if "seconds" not in k and k != "images_per_s"} for r in rows]  # noqa: E731
    assert strip(read_metrics(run_dir)) == strip(read_metrics(reference["run_dir"]))
    a = runs.load_checkpoint(f"{run_dir}/last.pt")["model"]
    b = runs.load_checkpoint(f"{reference['run_dir']}/last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_run_or_load_does_not_retrain(finished, monkeypatch):
    config, root, summary = finished
    from micronet_lib.train import engine

    calls = []
    monkeypatch.setattr(engine, "fit", lambda *a, **k: calls.append(a) or "trained")
    mtime = (root / config.config_hash() / "summary.json").stat().st_mtime_ns
    loaded = run_or_load(config, runs_dir=root)
    assert calls == [] and loaded["best_val_top1"] == summary["best_val_top1"]
    assert (root / config.config_hash() / "summary.json").stat().st_mtime_ns == mtime
    assert run_or_load(config.replace(seed=1), runs_dir=root) == "trained" and len(calls) == 1


def test_epoch_end_recalibrates_in_the_evaluation_mode_and_builds_one_copy(tmp_path, monkeypatch):
    import micronet_lib.evaluate as ev

    recal, copies = [], []
    real_recal, real_copy = ev.recalibrate_bn, ev.inference_copy
    monkeypatch.setattr(ev, "recalibrate_bn", lambda *a, **k: recal.append(k) or real_recal(*a, **k))
    monkeypatch.setattr(ev, "inference_copy", lambda *a, **k: copies.append(1) or real_copy(*a, **k))
    # an explicit mode (no calibration, which builds copies of its own) that is not recalibrate_bn's default
    config = tiny(cycles=1, epochs_per_cycle=2, prune_rates=None, precision="fp32", memory_format="channels_last")
    summary = fit(config, tmp_path / "run", progress=False)
    assert summary["execution"]["eval"]["mode"]["memory_format"] == "channels_last"
    assert len(recal) == 2 and all((k["precision"], k["memory_format"], k["n_images"]) == ("fp32", "channels_last", 128)
                                   for k in recal)
    assert len(copies) == 2  # one evaluated copy per epoch for val and test
    assert all(r["val_top1"] is not None and r["test_top1"] is not None for r in read_metrics(summary["run_dir"]))


def test_existing_folder_of_another_config_is_refused(finished):
    config, root, _ = finished
    with pytest.raises(ValueError, match="different config"):
        fit(config.replace(lr=0.05), root / config.config_hash(), progress=False)


def test_nan_loss_stops_cleanly_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    config = tiny(cycles=1, epochs_per_cycle=2, prune_rates=None, val_per_class=None, select_on="test",
                  bn_recalibrate_images=0, train_per_class=8)
    steps_per_epoch = -(-config.train_per_class * 10 // config.batch_size)
    original = regularizers.orthogonality_penalty
    calls = {"n": 0}

    def poisoned(model, **kw):
        calls["n"] += 1
        value = original(model, **kw)
        return value * float("nan") if calls["n"] == steps_per_epoch + 2 else value

    monkeypatch.setattr(regularizers, "orthogonality_penalty", poisoned)
    expected = rf"cycle 1 epoch 2 step 2 \(global step {steps_per_epoch + 2}\)"
    with pytest.raises(NonFiniteLossError, match=expected):
        fit(config, tmp_path, progress=False)
    ckpt = runs.load_checkpoint(tmp_path / "last.pt")
    assert (ckpt["cycle"], ckpt["epoch"], ckpt["step"]) == (0, 0, steps_per_epoch)
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "stopped" and "epoch 2 step 2" in summary["stopped_reason"]
    assert len(read_metrics(tmp_path)) == 1
