"""Fast AutoAugment's density-matching search (issue #29): ranking on a planted problem, resume after
kill -9, Ray equals in process, the policy file round trip, one-line errors.

The planted problem: two classes of flat grey images, dark (50..70) and light (110..130). The fixed
model was trained on them as they are (threshold ≈ 90); D_A was brightened ×1.8 (dark 90..126), so half
its dark images read as light. Brightness at level ≈ 0.3 (factor ≈ 0.6) maps D_A back onto the training
distribution (it helps); Invert swaps dark and light (it hurts); doing nothing lies in between.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from micronet_lib import assets
from micronet_lib.augment import build_pipeline
from micronet_lib.augment.ops import apply_op
from micronet_lib.augment.search import (
    SearchSettings,
    open_storage,
    open_study,
    policy_score,
    run_study,
    save_policy,
    top_policies,
)

# The local Ray cluster fixture (2 CPUs; fails, never skips, without Ray) shared with the executor tests.
from test_cluster import cluster  # noqa: E402,F401

REPO = Path(__file__).resolve().parents[1]
MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def planted_images(n_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 0: flat grey 50..70, class 1: 110..130 (one level per image), ±5 pixel noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(2).repeat_interleave(n_per_class)
    level = torch.where(labels == 0, 50.0, 110.0) + 20 * torch.rand(len(labels), generator=g)
    noise = torch.randint(-5, 6, (len(labels), 3, 32, 32), generator=g)
    return (level[:, None, None, None] + noise).clamp(0, 255).to(torch.uint8), labels


@pytest.fixture(scope="module")
def planted():
    """The fixed model (linear, trained on D_M as it is) and the brightened D_A."""
    torch.manual_seed(0)
    train_x, train_y = planted_images(100, seed=1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = (train_x.float() / 255 - 0.5) / 0.5
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), train_y).backward()
        opt.step()
    da_x, da_y = planted_images(60, seed=2)
    return model.eval(), torch.stack([apply_op(img, "Brightness", 1.8) for img in da_x]), da_y


def score(model, images, labels, policy, settings):
    return policy_score(model, images, labels, policy, mean=MEAN, std=STD, settings=settings, seed=5)["top1"]


def test_planted_problem_search_ranks_the_helping_op_above_the_hurting_one(planted, tmp_path, one_thread):
    model, images, labels = planted
    settings = SearchSettings(folds=2, trials=40, rounds=1, top=5, subpolicies=1, crop_flip=False,
                              ops=("Brightness", "Invert"), seed=3)
    nothing = score(model, images, labels, [(("Brightness", 0.0, 0.5), ("Invert", 0.0, 0.5))], settings)
    helps = score(model, images, labels, [(("Brightness", 1.0, 0.33), ("Invert", 0.0, 0.5))], settings)
    hurts = score(model, images, labels, [(("Invert", 1.0, 0.5), ("Brightness", 0.0, 0.5))], settings)
    assert hurts + 20 < nothing < helps - 10, (hurts, nothing, helps)  # the planted effects are real

    study = open_study(open_storage(f"sqlite:///{tmp_path / 's.db'}"), "planted", settings)
    assert run_study(study, lambda pol: score(model, images, labels, pol, settings), settings, progress=False) == 40

    def weight(policy, op, levels=(0.0, 1.0)):  # probability that ``op`` (at a level in ``levels``) fires
        miss = 1.0
        for name, p, level in policy[0]:
            if name == op and levels[0] <= level <= levels[1]:
                miss *= 1 - p
        return 1 - miss

    ranked = top_policies(study, 40)
    best_value, best = ranked[0]
    assert best_value > nothing + 10
    assert weight(best, "Brightness", (0.2, 0.45)) > 0.5 and weight(best, "Invert") < 0.2, best
    # the kept policies apply Brightness at the planted magnitude more, and Invert less, than the rest
    kept, dropped = ranked[:settings.top], ranked[settings.top:]
    mean = lambda rows, *a: sum(weight(p, *a) for _, p in rows) / len(rows)  # noqa: E731
    assert mean(kept, "Brightness", (0.2, 0.45)) > mean(dropped, "Brightness", (0.2, 0.45)) + 0.2
    assert mean(kept, "Invert") < mean(dropped, "Invert")
    assert ranked[-1][0] < nothing


def test_same_seed_same_trials_and_another_seed_others(planted, tmp_path, one_thread):
    model, images, labels = planted
    runs = {}
    for tag, seed in (("a", 1), ("b", 1), ("c", 2)):
        settings = SearchSettings(folds=2, trials=6, top=2, subpolicies=2, seed=seed)
        study = open_study(open_storage(f"sqlite:///{tmp_path / (tag + '.db')}"), "fold0-round0", settings)
        run_study(study, lambda pol: score(model, images, labels, pol, settings), settings, progress=False)
        runs[tag] = [(t.params, t.value) for t in study.trials]
    assert runs["a"] == runs["b"]
    assert [p for p, _ in runs["a"]] != [p for p, _ in runs["c"]]


KILLED_DRIVER = textwrap.dedent("""
    import sys, time
    from micronet_lib.augment.search import SearchSettings, open_storage, open_study, run_study
    settings = SearchSettings(folds=2, trials=12, top=2, subpolicies=2, seed=4)
    study = open_study(open_storage(sys.argv[1]), "fold0-round0", settings)
    open(sys.argv[1].removeprefix("sqlite:///") + ".ready", "w").close()  # the schema and the study exist: the test may read the database from now on

    def objective(policy):  # a slow, deterministic score of the policy's parameters
        time.sleep(0.3)
        return sum(p * (i + 1) + level for i, sub in enumerate(policy) for _, p, level in sub)

    run_study(study, objective, settings, progress=False)
""")


def _complete(storage: str) -> list:
    import optuna

    study = optuna.load_study(study_name="fold0-round0", storage=storage)
    return [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]


def test_resume_after_kill_9_repeats_no_finished_trial(tmp_path):
    storage = f"sqlite:///{tmp_path / 'killed.db'}"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", KILLED_DRIVER, storage], env=env, cwd=tmp_path)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:  # kill it in the middle of the study
            # read only once the driver has made the schema: two processes creating it at once race
            if (tmp_path / "killed.db.ready").exists() and len(_complete(storage)) >= 4:
                break
            assert proc.poll() is None, "the driver ended before it was killed"
            time.sleep(0.05)
        else:
            pytest.fail("the driver finished no 4 trials within 120 s")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    before = {t.number: (t.params, t.value) for t in _complete(storage)}
    assert 4 <= len(before) < 12

    scope: dict = {}
    exec(compile(KILLED_DRIVER.split("run_study(study")[0].replace("sys.argv[1]", repr(storage)), "driver", "exec"), scope)
    calls = []
    objective = scope["objective"]
    ran = run_study(scope["study"], lambda pol: calls.append(1) or objective(pol), scope["settings"], progress=False)
    after = _complete(storage)
    assert ran == len(calls) == 12 - len(before)        # only the missing trials ran
    assert len(after) == 12                              # counted in the database
    assert {t.number: (t.params, t.value) for t in after if t.number in before} == before

    # and the resumed study is the one an uninterrupted run makes (trial i is seeded by i)
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    study = open_study(open_storage(fresh), "fold0-round0", scope["settings"])
    run_study(study, objective, scope["settings"], progress=False)
    assert [(t.params, t.value) for t in _complete(fresh)] == [(t.params, t.value) for t in after]


def test_searched_policy_round_trips_through_the_policy_loader(tmp_path):
    subs = [[["Rotate", 0.25, 0.5], ["Invert", 1.0, 0.0]], [["Cutout", 0.5, 0.75], ["Color", 0.125, 1.0]]]
    path = save_policy(subs, tmp_path, set_name="searched_test", extra={"why": "test"})
    assert path.name.startswith("policy-") and path.with_suffix(".meta.json").is_file()
    loaded = assets.load_policies(path)
    assert loaded == {"searched_test": [tuple(tuple(op) for op in sub) for sub in subs]}
    # usable as an augmentation pipeline by name
    pipe = build_pipeline(f"fastaa:{path}", mean=MEAN, std=STD)
    out = pipe(torch.zeros(4, 3, 32, 32, dtype=torch.uint8), generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 3, 32, 32)
    assert repr(pipe.copies[0][0]) == f"FastAAStage({str(path)!r}, 2 sub-policies)"


def test_policy_loader_rejects_a_bad_policy_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"x": [[["Rotate", 1.5, 0.5], ["Invert", 1.0, 0.0]]]}')
    with pytest.raises(ValueError, match="p in \\[0, 1\\]"):
        assets.load_policies(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        assets.load_policies(tmp_path / "missing.json")


@pytest.mark.parametrize("argv, message", [
    (["--profile", "nope"], "unknown profile 'nope'"),
    (["--profile", "smoke", "--folds", "1"], "folds=1 must be at least 2"),
    (["--profile", "smoke", "--trials", "0"], "trials=0 must be a positive integer"),
    (["--profile", "smoke", "--ops", "Rotate,Zoom"], "unknown FastAA op(s) 'Zoom'"),
    (["--profile", "smoke", "--storage", "sqlite:////no/such/folder/s.db"], "folder /no/such/folder does not exist"),
    (["--profile", "smoke", "--storage", "nonsense"], "is not a SQLAlchemy URL"),
])
def test_cli_bad_input_is_one_error_line_before_any_work(argv, message, tmp_path, monkeypatch, capsys):
    from micronet_lib.cli import main

    monkeypatch.setenv("MICRONET_RUNS", str(tmp_path / "runs"))
    assert main(["search-augment", *argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not (tmp_path / "runs").exists()  # nothing was trained or written


# ---------------------------------------------------------------------- the whole search, in process and on Ray
def tiny_params() -> dict:
    """Smoke notebook parameters shrunk to seconds: 10 synthetic classes × 6 images (D_M 4, D_A 2 per class)."""
    from micronet_lib.pipeline import notebook_params

    return dict(notebook_params("smoke"), train_per_class=4, val_per_class=2, test_per_class=2, batch_size=16,
                device="cpu", bn_recal_images=32)


def _trials(storage: str, sid: str, folds: int) -> list:
    import optuna

    return [[(t.params, t.value, t.state.name) for t in optuna.load_study(study_name=f"{sid}/fold{k}-round0",
                                                                            storage=storage).trials]
            for k in range(folds)]


@pytest.mark.slow
def test_ray_path_equals_in_process_path_and_a_rerun_does_nothing(tmp_path, one_thread, cluster):
    from micronet_lib.experiments.augment_search import search_augment, search_settings
    from micronet_lib.experiments.sweeps import RayExecutor

    params = tiny_params()
    settings = search_settings("smoke", folds=2, trials=4, top=2, subpolicies=2, fold_epochs=1)
    runs = tmp_path / "runs"
    local = search_augment(params, settings, runs_dir=runs, storage=f"sqlite:///{tmp_path / 'local.db'}", progress=False)
    assert [f["trials_run"] for f in local.folds] == [4, 4]
    again = search_augment(params, settings, runs_dir=runs, storage=f"sqlite:///{tmp_path / 'local.db'}", progress=False)
    assert [f["trials_run"] for f in again.folds] == [0, 0] and again.policy == local.policy

    # on the local Ray cluster (2 CPUs) of tests/test_cluster.py: one task per fold; the fold models are read
    # back from the shared run store, the studies are searched anew into their own database
    executor = RayExecutor(cluster, cpus_per_run=1)
    remote = search_augment(params, settings, runs_dir=runs, storage=f"sqlite:///{tmp_path / 'ray.db'}",
                            executor=executor, progress=False)
    assert executor.name == "ray" and [f["trials_run"] for f in remote.folds] == [4, 4]
    assert _trials(remote.storage, remote.search_id, 2) == _trials(local.storage, local.search_id, 2)
    assert remote.policy == local.policy and remote.policy_path == local.policy_path
    assert assets.load_policies(remote.policy_path)  # the merged file loads

    # a finished search read back as a fresh clone of a committed set has it: run records, no checkpoints
    for checkpoint in runs.rglob("*.pt"):
        checkpoint.unlink()
    reread = search_augment(params, settings, runs_dir=runs, storage=f"sqlite:///{tmp_path / 'local.db'}", progress=False)
    assert [f["trials_run"] for f in reread.folds] == [0, 0] and reread.policy == local.policy


def test_paper_profile_is_the_authors_settings_and_its_cost_follows_from_the_step_times():
    from micronet_lib.experiments.augment_search import H200_EVAL_IMG_S, H200_TRAIN_IMG_S, estimate_cost, search_settings

    paper = search_settings("paper")
    assert (paper.folds, paper.rounds, paper.trials, paper.top, paper.subpolicies, paper.da_ratio) == (5, 2, 200, 10, 5, 0.4)
    cost = estimate_cost(paper)  # CIFAR-100: 500 images × 100 classes, D_A 200 per class
    assert (cost["d_m"], cost["d_a"]) == (30_000, 20_000)
    assert cost["fold_train_images"] == 5 * 200 * 30_000
    assert cost["trial_eval_images"] == 5 * 2 * 200 * 20_000 * 5
    assert cost["total_gpu_hours"] == pytest.approx(3e7 / H200_TRAIN_IMG_S / 3600 + 2e8 / H200_EVAL_IMG_S / 3600)
    # smaller budgets stay smaller in every dimension that costs time
    for name in ("cpu", "smoke"):
        s = search_settings(name)
        assert s.folds * s.rounds * s.trials < paper.folds * paper.rounds * paper.trials and s.fold_epochs < 200


def test_fold_models_are_ordinary_runs_with_d_a_as_their_validation_split():
    from micronet_lib.experiments.augment_search import fold_configs, search_id, search_settings

    params = tiny_params()  # 6 images per class: D_A round(0.4 × 6) = 2, D_M 4
    settings = search_settings("smoke", folds=3)
    configs = fold_configs(params, settings)
    assert [c.seed for c in configs] == [0, 1, 2] and len({c.config_hash() for c in configs}) == 3
    for c in configs:
        assert (c.train_per_class, c.val_per_class, c.augment, c.mix, c.select_on) == (4, 2, "baseline", "none", "last")
        assert (c.precision, c.memory_format) == ("fp32", "contiguous")  # the smoke profile's "auto" is pinned
        assert c.epochs_per_cycle == settings.fold_epochs and c.cycles == 1
    assert search_id(settings, configs) != search_id(search_settings("smoke", folds=3, seed=1), configs)
