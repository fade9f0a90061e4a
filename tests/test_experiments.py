"""micronet_lib.experiments: study configs, aggregation, and the released-checkpoint analyses (issue #8)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from pathlib import Path
import torch

from micronet_lib import experiments as ex
from micronet_lib.pipeline import check_params

# docs/method.md §6.1: mean σ_max(WᵀW − I)² over the 68 1×1 layers of the pr_60 checkpoints.
ONE_STEP = (0.46, 0.47)
ONE_STEP_TOL = 0.015  # one random start per layer: the seeded draw may sit just outside the quoted range
EXACT, EXACT_TOL = 0.54, 0.006
# docs/method.md §6.2: off-diagonal range of S (5 significant digits quoted).
S_RANGE = {"micronet_v1_pr_60": (0.00911, 0.01878), "micronet_v2_pr_60": (0.00916, 0.01846)}
S_TOL = 6e-6
# docs/method.md §7.4 (a few rows) and the set sizes.
POLICY_ROWS = {"Cutout": [158, 154, 152, 160], "Posterize": [110, 83, 108, 72], "Invert": [14, 55, 28, 44]}
POLICY_SIZES = [496, 498, 500, 490]


@pytest.fixture
def smoke():
    return check_params({}, profile="smoke")


# ------------------------------------------------------------------ configs


def test_parse_setting():
    assert ex.parse_setting("baseline") == ("baseline", "none")
    assert ex.parse_setting("fastaa+cutmix") == ("fastaa", "cutmix")
    assert ex.parse_setting("baseline+mixup") == ("baseline", "mixup")
    assert ex.parse_setting("randaugment") == ("randaugment:2:9", "none")  # shares the grid's (2, 9) run
    with pytest.raises(ValueError, match=r"'\+blend' is not a mixing; allowed: \+cutmix, \+mixup"):
        ex.parse_setting("baseline+blend")
    with pytest.raises(ValueError, match="unknown pipeline 'standard'; allowed: .*baseline"):
        ex.parse_setting("standard")


def test_base_config_applies_the_notebook_budget(smoke):
    cfg = ex.base_config(smoke, seed=3)
    assert (cfg.profile, cfg.seed, cfg.dataset) == ("smoke", 3, "synthetic")
    assert cfg.width_mult == smoke["width_mult"] and cfg.batch_size == smoke["batch_size"]
    assert (cfg.train_per_class, cfg.val_per_class, cfg.test_per_class) == (
        smoke["train_per_class"], smoke["val_per_class"], smoke["test_per_class"])
    assert (cfg.cycles, cfg.epochs_per_cycle) == (1, smoke["epochs"])
    no_val = ex.base_config({**smoke, "val_per_class": 0}, seed=0)
    assert no_val.val_per_class is None and no_val.select_on == "test"  # no split: the authors' selection
    capped = ex.base_config({**smoke, "bn_recal_images": 64}, seed=0)
    assert capped.bn_recalibrate_images == 64  # the notebook budget caps the short profile's BN re-estimation
    paper = ex.base_config(check_params({}, profile="paper"), seed=0)
    assert (paper.cycles, paper.epochs_per_cycle, paper.augment) == (4, 150, "fastaa4x")  # the recipe untouched
    assert paper.bn_recalibrate_images == 0 and paper.select_on == "test"


def test_study_cells_are_distinct_and_shared_where_they_should_be(smoke):
    cells = {ex.ablation_config(smoke, c, seed=0).config_hash() for c in ex.ABLATION_CELLS}
    assert len(cells) == 7  # the 3 × 2 grid and the matched-ε cell
    wls = ex.ablation_config(smoke, ex.AblationCell("wls", False), seed=0)
    assert (wls.loss, wls.ortho_coef, wls.epsilon) == ("wls", 0.0, None)
    matched = ex.ablation_config(smoke, ex.MATCHED_EPSILON_CELL, seed=0)
    assert (matched.loss, matched.ortho_coef, matched.epsilon) == ("ls", 0.7, 0.3)
    assert ex.MATCHED_EPSILON_CELL.label == "uniform LS (ε 0.3) + ortho"
    with pytest.raises(ValueError, match="only LS/WLS cells"):
        ex.AblationCell("ce", True, epsilon=0.3)
    dense = ex.dense_config(smoke, seed=0)
    assert dense.ortho_coef == 0.7 and dense.loss == "ce"
    # one run serves the ablation's CE + ortho cell, the augmentation study's baseline+cutmix and pruning's start
    assert dense.config_hash() == ex.augment_config(smoke, "baseline+cutmix", seed=0).config_hash()
    assert ex.augment_config(smoke, "baseline", seed=0).mix == "none"
    assert ex.randaugment_grid(smoke) == ["randaugment:1:9", "randaugment:2:9"]
    with pytest.raises(ValueError, match="AblationCell.loss='focal'"):
        ex.AblationCell("focal", True)


def test_iterative_and_oneshot_have_the_same_budget(smoke):
    it = ex.iterative_config(smoke, "dense.pt", seed=0)
    one = ex.oneshot_config(smoke, "dense.pt", seed=0)
    assert it.prune_rates == tuple(smoke["prune_rates"]) and it.cycles == len(smoke["prune_rates"])
    assert one.prune_rates == (smoke["prune_rates"][-1],) and one.cycles == 1
    assert it.total_epochs == one.total_epochs and it.init_from == one.init_from == "dense.pt"


def test_relative_checkpoint_is_a_run_reference_resolved_in_the_runs_folder(tmp_path, monkeypatch):
    from micronet_lib.train.setup import checkpoint_path

    # No folder path in the reference: the config hash is the same in staging, in the set, on a fresh clone.
    ref = ex.relative_checkpoint({"run_dir": "/anywhere/runs/abc", "run_id": "abc"})
    assert ref == "run:abc/best.pt"
    monkeypatch.setenv("MICRONET_RUNS", str(tmp_path / "runs"))
    with pytest.raises(FileNotFoundError, match="checkpoints are not committed"):
        checkpoint_path(ref)
    (tmp_path / "runs" / "abc").mkdir(parents=True)
    (tmp_path / "runs" / "abc" / "best.pt").write_bytes(b"x")
    assert checkpoint_path(ref) == tmp_path / "runs" / "abc" / "best.pt"
    assert checkpoint_path("some/file.pt") == Path("some/file.pt")


# ------------------------------------------------------------------ aggregation


def test_mean_std_over_seeds():
    df = pd.DataFrame({"cell": ["a", "a", "b"], "acc": [10.0, 14.0, 7.5]})
    out = ex.mean_std(df, "cell", ["acc"])
    assert list(out.index) == ["a", "b"] and list(out["n"]) == [2, 1]
    assert out.loc["a", "acc_mean"] == 12.0 and math.isclose(out.loc["a", "acc_std"], math.sqrt(8))
    assert out.loc["a", "acc"] == "12.00 ± 2.83" and out.loc["b", "acc"] == "7.50 (n=1)"
    with pytest.raises(ValueError, match=r"columns \['top1'\] not in the runs table"):
        ex.mean_std(df, "cell", ["top1"])


# ------------------------------------------------------------------ released analyses


def test_cifar100_superclasses():
    assert len(ex.CIFAR100_SUPERCLASSES) == 20
    assert all(len(v) == 5 for v in ex.CIFAR100_SUPERCLASSES.values())
    assert len(set(ex.CIFAR100_CLASSES)) == 100
    assert ex.CIFAR100_CLASSES[:3] == ("apple", "aquarium_fish", "baby") and ex.CIFAR100_CLASSES[-1] == "worm"


def test_similarity_tools_on_a_constructed_classifier():
    w = torch.randn(100, 16, generator=torch.Generator().manual_seed(0))
    girl, woman = ex.CIFAR100_CLASSES.index("girl"), ex.CIFAR100_CLASSES.index("woman")
    w[woman] = w[girl] + 1e-3  # the most similar pair by construction
    pairs = ex.similar_pairs(w, k=3)
    assert (pairs.loc[0, "class_a"], pairs.loc[0, "class_b"], bool(pairs.loc[0, "same_superclass"])) == ("girl", "woman", True)
    s = ex.similarity_by_superclass(w)
    assert s.shape == (100, 100) and list(s.index[:5]) == list(ex.CIFAR100_SUPERCLASSES["aquatic mammals"])
    assert np.allclose(s.to_numpy().sum(axis=1), 1.0) and np.allclose(np.diag(s.to_numpy()), 0.0)
    with pytest.raises(ValueError, match=r"CIFAR-100 classifier weight \[100, D\]"):
        ex.similar_pairs(torch.zeros(10, 4))


def test_orthogonality_table_on_an_orthogonal_layer():
    conv = torch.nn.Conv2d(8, 8, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.linalg.qr(torch.randn(8, 8))[0].reshape(8, 8, 1, 1))
    t = ex.orthogonality_table(torch.nn.Sequential(conv))
    assert len(t) == 1 and t.loc[0, "exact"] < 1e-10 and abs(t.loc[0, "sv_max"] - 1) < 1e-6


def test_released_checkpoints_match_the_paper(asset):
    from micronet_lib.models import load_released

    for name in ("micronet_v1_pr_60", "micronet_v2_pr_60"):
        asset(f"{name}.t7")
        model = load_released(name)
        t = ex.orthogonality_table(model, seed=0)
        assert len(t) == 68  # docs/method.md §6.1
        assert ONE_STEP[0] - ONE_STEP_TOL <= t["one_step"].mean() <= ONE_STEP[1] + ONE_STEP_TOL
        assert abs(t["exact"].mean() - EXACT) < EXACT_TOL
        assert (t["one_step"] <= t["exact"] + 1e-9).all()  # one power step never overshoots σ_max
        s = ex.similarity_by_superclass(model.linear.weight).to_numpy()
        off = s[~np.eye(100, dtype=bool)]
        assert abs(off.min() - S_RANGE[name][0]) < S_TOL and abs(off.max() - S_RANGE[name][1]) < S_TOL


def test_policy_statistics_match_the_paper(asset):
    asset("cifar100_fast_aug.json")
    counts = ex.policy_op_counts()
    assert [int(c.split("(")[1].rstrip(")")) for c in counts.columns] == POLICY_SIZES
    for op, row in POLICY_ROWS.items():
        assert counts.loc[op].tolist() == row
    assert counts.sum().tolist() == [2 * n for n in POLICY_SIZES]
    stats = ex.policy_op_stats()
    assert ((stats["mean_prob"] >= 0) & (stats["mean_prob"] <= 1)).all()
    assert stats.groupby("set")["count"].sum().loc["wresnet28x10"] == 2 * 496


def test_released_chain_is_nested_and_oneshot_curve_is_monotone(asset):
    from micronet_lib.models import load_released

    names = [f"micronet_v2_pr_{r}" for r in (15, 60)]
    for n in names:
        asset(f"{n}.t7")
    chain = ex.chain_table({n: load_released(n) for n in names}, conventions=("kaist",))
    assert chain["violations_vs_previous"].tolist()[1:] == [0]
    assert abs(chain.loc[1, "global_sparsity"] - 0.6) < 1e-5 and chain.loc[1, "score_kaist"] < chain.loc[0, "score_kaist"]
    curve = ex.oneshot_curve(names[0], [0, 50, 90], conventions=("kaist",))
    assert abs(curve.loc[0, "global_sparsity"] - 0.15) < 1e-5  # the file's own masks are kept
    assert curve["global_sparsity"].is_monotonic_increasing and curve["score_kaist"].is_monotonic_decreasing
    assert "top1" not in curve  # no data set given: scores only


def test_cpu_profile_compares_every_cell_over_three_seeds():
    cpu = check_params({}, profile="cpu")
    assert len(cpu["seeds"]) >= 3 and cpu["comparison_seeds"] >= 3


def test_decisive_profiles_train_only_the_cells_that_test_a_claim():
    cpu, smoke = check_params({}, profile="cpu"), check_params({}, profile="smoke")
    assert [c.label for c in ex.ablation_cells(cpu)] == ["CE", "CE + ortho", "weighted LS + ortho",
                                                         "uniform LS (ε 0.3) + ortho"]
    assert ex.ablation_cells(smoke) == ex.ABLATION_CELLS and ex.ablation_cells(check_params({}, profile="gpu")) == ex.CLAIM_CELLS
    assert cpu["augment_pipelines"] == ["baseline", "baseline+cutmix", "fastaa+cutmix"] and not ex.randaugment_grid(cpu)
    # shared where the recipe allows: the ablation's CE + ortho is 03's baseline+cutmix and 04's dense parent
    configs = {c.config_hash() for study in ("02", "03") for c in ex.study_configs(study, cpu)}
    new_in_03 = len(ex.available_settings(cpu)) - 1  # fastaa+cutmix needs the policy asset
    assert len(configs) == (4 + new_in_03) * len(cpu["seeds"])


def test_00_deviations_state_the_values_the_runs_use_with_reasons_that_apply():
    from micronet_lib.report.setup_tables import deviations_table

    table = deviations_table(check_params({}, profile="cpu"))
    used = {(r.setting, r._2): r for r in table.itertuples()}  # _2: "value used"
    assert used[("train_per_class", "200")].runs.startswith("all ") and ("epochs_per_cycle", "16") in used
    assert used[("augment", "'baseline'")].reason.startswith("crop + flip")
    fastaa = used[("augment", "'fastaa'")]
    assert "crop + flip" not in fastaa.reason and fastaa.runs.startswith("03:")  # not the baseline's reason
    assert "…" not in "".join(table["reason"])
    ortho = used[("ortho_coef", "0.0")]
    # only the claim cells (issue #28): CE is the one ortho-off cell of 4, over 9 seeds
    assert ortho.runs == "02: 9 of 36"
    assert ("precision", "'bf16'") in used and used[("precision", "'bf16'")].reason.startswith("execution mode named")


def test_oneshot_curve_accuracy_comes_with_a_wilson_interval(one_thread):
    """A single evaluation per rate: top-1 with its 95 % Wilson interval over the images evaluated (issue #11)."""
    from micronet_lib.data import load_dataset
    from micronet_lib.models import build_model
    from micronet_lib.report.stats import wilson_interval

    ds = load_dataset("synthetic", synthetic_train_per_class=4, synthetic_test_per_class=3)
    model = build_model("micronet_v2", num_classes=10, width_mult=0.25, depth_mult=0.5).eval()
    curve = ex.oneshot_curve(model, [0, 50], dataset=ds, recal_images=20, conventions=("kaist",))
    for r in curve.itertuples():
        assert r.images == 30
        iv = wilson_interval(round(r.top1 * r.images / 100), r.images)
        assert (r.top1_low, r.top1_high) == pytest.approx((iv.low, iv.high))
        assert r.top1_bn_recal_low <= r.top1_bn_recal <= r.top1_bn_recal_high
