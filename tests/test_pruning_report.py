"""Sparsity report and nesting on the released checkpoints (docs/method.md §4.4–4.5), and ``micronet sparsity``."""

from __future__ import annotations

import json

import pytest
import torch

from micronet_lib.cli import main
from micronet_lib.pruning import (
    chain_violations,
    global_sparsity,
    group_table,
    mask_disagreements,
    nesting_table,
    read_state_dict,
    sparsity_table,
)

GROUPS = ("stem", "expand", "depthwise", "project", "shortcut", "se_fc1", "se_fc2", "classifier", "all")
# docs/method.md §4.5, nnz per group (exact integers), rows in GROUPS order.
PAPER_NNZ = {
    "micronet_v1_pr_60": (712, 53_656, 18_005, 70_020, 8_872, 9_990, 8_926, 10_001, 180_182),
    "micronet_v2_pr_15": (840, 147_320, 21_004, 163_408, 19_254, 18_938, 18_464, 11_278, 400_506),
    "micronet_v2_pr_30": (806, 116_021, 19_657, 133_306, 16_144, 16_725, 16_066, 11_104, 329_829),
    "micronet_v2_pr_45": (763, 86_350, 18_162, 102_696, 13_120, 14_068, 13_107, 10_885, 259_151),
    "micronet_v2_pr_60": (655, 59_485, 16_178, 71_117, 9_972, 10_696, 9_884, 10_487, 188_474),
}
PAPER_NUMEL = {
    "v1": (864, 174_912, 23_976, 187_536, 18_416, 17_076, 17_076, 10_600, 450_456),
    "v2": (864, 180_000, 22_320, 192_680, 22_048, 20_936, 20_936, 11_400, 471_184),
}
# docs/method.md §4.1 global sparsities, printed to 6 decimals.
PAPER_SPARSITY = {"micronet_v1_pr_60": 0.600001, "micronet_v2_pr_60": 0.599999}
PRINTED = 5e-7  # half a unit in the 6th decimal
V2_CHAIN = ("micronet_v2_pr_15", "micronet_v2_pr_30", "micronet_v2_pr_45", "micronet_v2_pr_60")


@pytest.fixture
def released(asset):
    return lambda name: read_state_dict(asset(f"{name}.t7"))


@pytest.mark.parametrize("name", list(PAPER_NNZ))
def test_group_nnz_matches_paper_table(released, name):
    table = group_table(released(name))
    assert tuple(table.index) == GROUPS
    assert tuple(int(v) for v in table["nnz"]) == PAPER_NNZ[name]
    assert tuple(int(v) for v in table["numel"]) == PAPER_NUMEL[name.split("_")[1]]
    assert table["sparsity"].between(0, 1).all()


@pytest.mark.parametrize("name", list(PAPER_SPARSITY))
def test_global_sparsity_of_submissions(released, name):
    assert abs(global_sparsity(released(name)) - PAPER_SPARSITY[name]) <= PRINTED


def test_released_masks_equal_nonzero_weights_and_layer_table(released):
    state = released("micronet_v2_pr_15")
    assert len(mask_disagreements(state)) == 86 and not any(a or b for a, b in mask_disagreements(state).values())
    layers = sparsity_table(state).set_index("name")
    assert len(layers) == 86 and layers["masked"].all()
    assert (layers["nnz"] == layers["mask_kept"]).all()
    # docs/method.md §4.5: in v2_pr_15 exactly one tensor has no zeros, layers.7.conv2.weight (1,260 weights).
    dense = layers[layers["nnz"] == layers["numel"]]
    assert list(dense.index) == ["layers.7.conv2.weight"] and int(dense["numel"].iloc[0]) == 1260


def test_released_ver2_chain_is_nested(released):
    chain = [released(n) for n in V2_CHAIN]
    assert chain_violations(chain) == [0, 0, 0]
    # The check can fail: the reverse direction (denser inside sparser) has violations.
    reverse = nesting_table(chain[3], chain[0])
    assert int(reverse["violations"].sum()) == PAPER_NNZ["micronet_v2_pr_15"][-1] - PAPER_NNZ["micronet_v2_pr_60"][-1]


def test_nesting_rejects_different_architectures(released):
    with pytest.raises(ValueError, match="same architecture"):
        chain_violations([released("micronet_v1_pr_60"), released("micronet_v2_pr_60")])


def test_cli_sparsity_json(asset, capsys):
    path = asset("micronet_v2_pr_30.t7")
    outer = asset("micronet_v2_pr_15.t7")
    assert main(["sparsity", str(path), "--json", "--nested-in", str(outer)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["nnz"] == PAPER_NNZ["micronet_v2_pr_30"][-1] and out["numel"] == PAPER_NUMEL["v2"][-1]
    assert out["groups"]["expand"]["nnz"] == PAPER_NNZ["micronet_v2_pr_30"][1]
    assert len(out["layers"]) == 86 and out["nested_in"]["violations"] == 0


def test_cli_sparsity_rejects_inconsistent_masks(asset, tmp_path, capsys):
    state = read_state_dict(asset("micronet_v2_pr_60.t7"))
    state["linear.weight"][state["linear.mask"] == 0] = 1.0
    torch.save(state, tmp_path / "bad.t7")
    assert main(["sparsity", str(tmp_path / "bad.t7")]) == 2
    assert "linear.mask: 913 nonzero weights under mask 0" in capsys.readouterr().err  # 11,400 − 10,487 (§4.5)
