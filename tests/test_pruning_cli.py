"""``micronet prune`` (one-shot and schedule argument checks) and the scorer on pruned models (docs/scoring.md)."""

from __future__ import annotations

import json

import pytest
import torch

from micronet_lib.cli import main
from micronet_lib.models import build_model
from micronet_lib.pruning import global_sparsity, load_pruned, nesting_violations, prune_to_rate, read_state_dict

PRUNABLE_V2 = 471_184  # docs/method.md §3.4
ONE_WEIGHT = 1
REL = 1e-12  # float64 bookkeeping in the scorer; the formulas are exact in rationals


pytestmark = pytest.mark.usefixtures("one_thread")


def test_cli_one_shot_writes_a_checkpoint_the_scorer_reads(asset, tmp_path, capsys):
    from micronet_lib.scoring import count

    src = asset("micronet_v2_pr_15.t7")
    out = tmp_path / "v2_pr_30_oneshot.t7"
    assert main(["prune", "--from", str(src), "--rate", "30", "--one-shot", "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["numel"] == PRUNABLE_V2 and abs(printed["numel"] - printed["nnz"] - 0.3 * PRUNABLE_V2) <= ONE_WEIGHT
    meta = json.loads((tmp_path / "v2_pr_30_oneshot.t7.json").read_text())
    assert meta["rate_percent"] == 30 and meta["source"] == str(src)
    raw = torch.load(out, map_location="cpu", weights_only=True)
    assert len(raw) == 470 and sum(k.endswith(".mask") for k in raw) == 86  # the authors' layout (docs/method.md §4.2–4.4)
    model = load_pruned(out)
    assert abs(global_sparsity(model) - 0.30) <= ONE_WEIGHT / PRUNABLE_V2
    assert nesting_violations(read_state_dict(src), model) == 0
    summary = count(model).summary
    assert summary["mask_bits"] == PRUNABLE_V2  # docs/scoring.md: B = numel of all ndim > 1 weights when any zero exists


def test_scorer_counts_drop_with_density():
    # docs/scoring.md "kaist": conv mults = adds = n·K·d, params nnz(W) + C_out; Linear mults in·out·d,
    # adds (in − 1)·out·d. Pruning must scale each weighted layer by its density and nothing else.
    from micronet_lib.scoring import count

    torch.manual_seed(0)
    model = build_model("micronet_v2").eval()
    dense = count(model).table.set_index("path")
    dense_summary = count(model).summary
    assert dense_summary["mask_bits"] == 0  # a fully dense model carries no mask
    prune_to_rate(model, 60)
    sparse = count(model).table.set_index("path")
    weighted = dense.index[dense["numel"] > 0]
    assert len(weighted) == 86
    for path in weighted:
        d = sparse.at[path, "nonzeros"] / sparse.at[path, "numel"]
        assert sparse.at[path, "nonzeros"] == int((model.get_submodule(path).weight != 0).sum())
        assert sparse.at[path, "mults"] == pytest.approx(dense.at[path, "mults"] * d, rel=REL), path
        assert dense.at[path, "params"] - sparse.at[path, "params"] == sparse.at[path, "numel"] - sparse.at[path, "nonzeros"]
        if path != "linear":
            assert sparse.at[path, "adds"] == pytest.approx(dense.at[path, "adds"] * d, rel=REL), path
    lin_in, lin_out = model.linear.in_features, model.linear.out_features
    d_fc = sparse.at["linear", "nonzeros"] / sparse.at["linear", "numel"]
    assert sparse.at["linear", "adds"] == pytest.approx((lin_in - 1) * lin_out * d_fc, rel=REL)
    unweighted = dense.index[dense["numel"] == 0]
    assert (sparse.loc[unweighted, ["mults", "adds"]] == dense.loc[unweighted, ["mults", "adds"]]).all().all()
    summary = count(model).summary
    assert summary["mask_bits"] == PRUNABLE_V2
    assert summary["params_s"] == pytest.approx(summary["params"] / 2 + PRUNABLE_V2 / 32, rel=REL)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rate", "100", "--one-shot", "--out", "x.t7"], r"rate_percent=100.0 is outside \[0, 100\)"),
        (["--rate", "-5", "--one-shot", "--out", "x.t7"], r"rate_percent=-5.0 is outside \[0, 100\)"),
        (["--rate", "30", "--one-shot"], "--one-shot needs --rate R"),
        (["--rate", "30", "--max-rate", "60", "--one-shot", "--out", "x.t7"], "--max-rate.*schedule mode"),
        (["--rate", "30", "--out", "x.t7"], "--rate, --out belong to --one-shot"),
        (["--max-rate", "30", "--min-rate", "45", "--profile", "smoke"], "min_rate=45.0 exceeds max_rate=30.0"),
        (["--max-rate", "100", "--profile", "smoke"], r"max_rate=100.0 is outside \[0, 100\)"),
        (["--max-rate", "60", "--profile", "smoke", "--cycles", "0"], "cycles=0 must be a positive integer"),
        (["--max-rate", "60"], "needs --max-rate M and --profile P"),
        (["--one-shot", "--rate", "30", "--out", "x.t7", "--recalibrate-bn"], "--recalibrate-bn needs --data"),
    ],
)
def test_cli_prune_rejects_bad_input_before_work(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["prune", "--from", "micronet_v2_pr_15", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    import re

    assert re.search(message, err), err
    assert not (tmp_path / "x.t7").exists()


def test_cli_one_shot_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert main(["prune", "--from", str(tmp_path / "nope.t7"), "--rate", "30", "--one-shot", "--out", str(tmp_path / "o.t7")]) == 2
    assert "neither an existing file nor a released checkpoint" in capsys.readouterr().err


def test_one_shot_with_bn_recalibration(tmp_path):
    from micronet_lib.data import load_dataset
    from micronet_lib.pruning import oneshot_prune, save_pruned

    torch.manual_seed(0)
    model = build_model("micronet_v2", num_classes=10, width_mult=0.5, depth_mult=0.5).eval()
    before = model.bn1.running_mean.clone()
    ds = load_dataset("synthetic", synthetic_train_per_class=4, synthetic_test_per_class=1)
    pruned = oneshot_prune(model, 45, recalibrate=ds, recalibrate_images=32)
    assert not torch.equal(pruned.bn1.running_mean, before)  # statistics were re-estimated
    assert not pruned.training
    assert abs(global_sparsity(pruned) - 0.45) <= ONE_WEIGHT / sum(
        p.numel() for n, p in pruned.named_parameters() if p.ndim > 1
    )
    save_pruned(pruned, tmp_path / "p.t7")
    assert nesting_violations(read_state_dict(tmp_path / "p.t7"), pruned) == 0
