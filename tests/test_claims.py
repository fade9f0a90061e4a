"""Claim boxes and comparison tables (issue #11): setups read from the runs, verdicts from the numbers."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from micronet_lib.report.claims import CLAIMS, ClaimBoard, setup_text
from micronet_lib.experiments import comparison_table, paired
from micronet_lib.report.stats import verdict


def _summary(seed, loss="ce", epochs=5):
    return {"config": {"seed": seed, "loss": loss}, "epochs_total": epochs, "profile": "cpu",
            "data": "CIFAR-10 (JPEG) stand-in", "data_id": "imagefolder:x:train1200/val200/test500#abc",
            "deviations": [f"loss={loss!r} (authors: 'ce'): override", "cycles=1 (authors: 4): CPU budget",
                           "train_per_class=120 (authors: None): CPU budget"]}


def test_setup_text_states_what_the_runs_used():
    text = setup_text([_summary(0), _summary(1, "wls"), _summary(2)])
    assert "1,200 train / 200 val images, 500 test images per epoch for the curves" in text
    assert "5 epochs per run" in text and "3 seeds (0, 1, 2)" in text and "profile `cpu`" in text
    assert "`cycles`" in text and "`loss`" not in text  # the compared knob is the cell, not a departure
    assert "1 seed (0)" in setup_text([_summary(0)])
    with pytest.raises(ValueError):
        setup_text([])


def test_board_settles_claims_and_rejects_unknown_ones():
    board = ClaimBoard(["wls_beats_ls", "ortho_helps"])
    assert board.markdown().count("pending") == 2
    v = verdict(paired(pd.DataFrame(dict(cell=["a"] * 3 + ["b"] * 3, seed=[0, 1, 2] * 2,
                                         best_test_top1=[30, 31, 32, 31.5, 32.4, 33.6])), "cell", "b", "a"))
    board.settle("wls_beats_ls", setup="stand-in", result="+1.5 points", verdict=v)
    assert "**reproduced**" in board.markdown() and board.markdown().count("pending") == 1
    assert CLAIMS["wls_beats_ls"].source in board.box("wls_beats_ls") and "stand-in" in board.box("wls_beats_ls")
    assert list(board.frame()["verdict"]) == ["reproduced", "pending"]
    board.settle("wls_beats_ls", setup="x", result="max |Δ| = 0", verdict=v)
    assert "max \\|Δ\\| = 0" in board.markdown()  # a '|' in a result does not split the table row
    runs = pd.DataFrame(dict(cell=["a"] * 3 + ["b"] * 3, seed=[0, 1, 2] * 2, best_test_top1=[30, 31, 32, 28, 29.2, 29.9]))
    board.settle_paired("ortho_helps", runs, by="cell", treatment="b", baseline="a",
                        summaries=[_summary(s) for s in range(3)], params={"profile": "cpu", "data": "cifar100"})
    assert board.entries["ortho_helps"].verdict.label == "not reproduced at this budget"
    assert "goes against the paper" in board.box("ortho_helps") and "b − a" in board.box("ortho_helps")
    board.settle_paired("ortho_helps", runs, by="cell", treatment="b", baseline="a",
                        summaries=[_summary(0)], params={"profile": "paper", "data": "cifar100"})
    assert board.entries["ortho_helps"].verdict.label == "contradicted"
    with pytest.raises(ValueError, match="unknown claim"):
        ClaimBoard(["no_such_claim"])
    with pytest.raises(ValueError, match="not on this board"):
        board.settle("scores", setup="", result="", verdict=v)


def test_comparison_table_intervals_paired_deltas_and_no_std_for_one_seed():
    df = pd.DataFrame(dict(cell=["base"] * 3 + ["x"] * 3, seed=[0, 1, 2] * 2, best_test_top1=[30, 32, 31, 31, 33.5, 31.5]))
    t = comparison_table(df, "cell", "base").set_index("cell")
    assert t.loc["x", "Δ vs base (points)"] == pytest.approx(1.0) and t.loc["base", "Δ vs base (points)"] is None
    assert t.loc["base", "95 % CI low (%)"] == pytest.approx(31 - 4.302652729911275 / math.sqrt(3))
    assert "std (%)" in t.columns
    one = comparison_table(df[df.seed == 0], "cell", "base")
    assert "std (%)" not in one.columns and one["95 % CI low (%)"].isna().all()
    with pytest.raises(ValueError, match="baseline"):
        comparison_table(df, "cell", "nope")


def test_every_report_board_lists_known_claims_and_settles_each_one():
    """Static check of notebooks 01-05: a board near the top, every claim on it settled in a later cell."""
    import ast
    import re
    from pathlib import Path

    import nbformat

    seen = set()
    for path in sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("0[1-5]_*.ipynb")):
        cells = [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
        boards = [(i, re.search(r"ClaimBoard\((\[.*?\])\)", s)) for i, s in enumerate(cells)]
        boards = [(i, ast.literal_eval(m.group(1))) for i, m in boards if m]
        assert len(boards) == 1 and boards[0][0] <= 3, f"{path.name}: one claim board, before the results"
        first, keys = boards[0]
        assert keys and set(keys) <= set(CLAIMS), path.name
        for key in keys:
            assert any(f'"{key}"' in s and "settle" in s for s in cells[first + 1:]), f"{path.name}: {key} never settled"
        seen.update(keys)
    assert seen == set(CLAIMS)  # every claim of the table is tested by some report
