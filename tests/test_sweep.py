"""The executor seam without Ray (issue #15): study grids, rounds, read-back, stopped runs, the CLI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from micronet_lib import experiments as ex
from micronet_lib.cli import main
from micronet_lib.experiments.sweeps import InProcess, run_configs, sweep
from micronet_lib.pipeline import check_params
from micronet_lib.train import TrainConfig, read_summary, run_dir_for
from micronet_lib.train.runs import write_summary


@pytest.fixture
def tiny_params():
    """The smoke notebook parameters cut to one seed, one epoch and a handful of images."""
    return check_params(dict(seeds=[0], comparison_seeds=1, train_per_class=4, val_per_class=2, test_per_class=4,
                             epochs=1, batch_size=16, bn_recal_images=32, prune_rates=[30.0, 60.0], prune_epochs=1,
                             device="cpu"), profile="smoke")


def test_study_configs_are_the_notebooks_grids():
    smoke = check_params({}, profile="smoke")
    ablation = ex.study_configs("02", smoke)
    assert len(ablation) == 7 * len(smoke["seeds"])  # 6 cells + the matched-ε cell
    assert [c.config_hash() for c in ablation] == [ex.ablation_config(smoke, cell, seed=s).config_hash()
                                                    for cell, s in ex.ablation_grid(smoke)]
    grid = ex.augment_grid(smoke, ex.randaugment_grid(smoke))
    assert grid == [("randaugment:1:9", 0), ("randaugment:2:9", 0)]
    assert len(ex.study_configs("04", smoke)) == smoke["comparison_seeds"]  # pruning runs need the dense run
    with pytest.raises(ValueError, match="unknown study '05'"):
        ex.study_configs("05", smoke)


def test_sweep_runs_the_pruning_study_in_rounds_and_reads_it_back(tmp_path, tiny_params, one_thread):
    workdir, runs = tmp_path / "notebooks", tmp_path / "runs"
    workdir.mkdir()
    lines: list[str] = []
    report = sweep(["04"], tiny_params, executor=InProcess(), runs_dir=runs, workdir=workdir, progress=False,
                   echo=lines.append)
    assert report.failures == {} and (report.loaded, report.ran) == (0, 3)
    dense = report.summaries[ex.dense_configs(tiny_params)[0].config_hash()]
    # the pruning configs equal what notebook 04 builds from its working directory
    iterative, oneshot = ex.prune_pairs(tiny_params, [dense])[0]
    assert iterative.init_from == oneshot.init_from == f"run:{dense['run_id']}/best.pt"
    assert {iterative.config_hash(), oneshot.config_hash()} < set(report.summaries)
    assert [line.split("]")[0] for line in lines if line.startswith("[")] == ["[1/1", "[2/3", "[3/3"]
    again = sweep(["04"], tiny_params, executor=InProcess(), runs_dir=runs, workdir=workdir, progress=False)
    assert (again.loaded, again.ran) == (3, 0) and again.summaries == report.summaries


def test_runs_execute_in_workdir_where_a_relative_imagefolder_path_is_found(tmp_path, monkeypatch):
    # notebook_params writes an imagefolder: path relative to the notebooks folder (what the notebooks see), so
    # the executors run there: the working directory is still needed, now that init_from is run:<id>/best.pt.
    from micronet_lib.data import find_image_folder
    from micronet_lib.experiments import sweeps as executors
    from micronet_lib.pipeline.datasets import resolve_data
    from micronet_lib.train.runs import RunSummary

    monkeypatch.delenv("MICRONET_IMAGEFOLDER_ROOT", raising=False)  # found through the working directory alone
    workdir, runs = tmp_path / "notebooks", tmp_path / "runs"
    for d in (workdir, tmp_path / "data" / "train", tmp_path / "data" / "test"):
        d.mkdir(parents=True)
    spec = resolve_data(f"imagefolder:{tmp_path / 'data'}", workdir)
    assert spec == "imagefolder:../data"
    config = TrainConfig.from_profile("smoke", device="cpu", dataset=spec)
    seen = []

    def fake_run_or_load(config, *, runs_dir, progress):
        seen.append((Path.cwd(), os.environ["MICRONET_RUNS"], find_image_folder(config.dataset.split(":", 1)[1])))
        return RunSummary(status="finished")

    monkeypatch.setattr(executors, "run_or_load", fake_run_or_load)
    here = Path.cwd()
    [(_, outcome)] = InProcess().execute([config], runs_dir=runs, workdir=workdir, progress=False)
    assert outcome["status"] == "finished"
    assert executors._train_in_worker(config.to_dict(), str(runs), str(workdir), 0)["status"] == "finished"
    assert [(cwd, env) for cwd, env, _ in seen] == [(workdir.resolve(), str(runs))] * 2
    assert all(found is not None for _, _, found in seen) and Path.cwd() == here


def test_a_stopped_run_is_reported_not_resubmitted(tmp_path):
    config = TrainConfig.from_profile("smoke", epochs_per_cycle=1, cycles=1, device="cpu")
    run_dir = run_dir_for(config, tmp_path)
    run_dir.mkdir(parents=True)
    write_summary(run_dir, dict(status="stopped", stopped_reason="non-finite loss (nan) at cycle 1 epoch 1",
                                config=config.to_dict()))
    lines: list[str] = []
    report = run_configs([config], runs_dir=tmp_path, retry_stopped=False, echo=lines.append)
    assert report.ran == 0 and "non-finite loss" in report.failures[config.config_hash()]
    assert sum("NOT resubmitted" in line for line in lines) == 1
    assert read_summary(run_dir)["status"] == "stopped"  # untouched


def test_sweep_cli(capsys, tmp_path):
    assert main(["sweep", "--profile", "smoke", "--study", "02", "--dry-run", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 14 and all(line.startswith("02 ") and line.endswith(" to run") for line in out)
    assert main(["sweep", "--profile", "smoke", "--executor", "slurm"]) == 2
    assert "allowed: inprocess, ray, ray:auto, ray:HOST:PORT" in capsys.readouterr().err
    assert main(["sweep", "--profile", "smoke", "--study", "07"]) == 2
    assert "--study '07'" in capsys.readouterr().err
