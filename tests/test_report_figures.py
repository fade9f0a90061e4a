"""The reports' figures (issue #32): one small test per report of what can be checked on the Figure object."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from micronet_lib.report.figures import (DISTINCT_COLOURS, LEADERBOARD_DATA, MIN_COLOUR_DISTANCE,
                                         ablation_curves_figure, block_order, colour_distance, figure_problems,
                                         grid_heatmap, leaderboard_figure, per_block_figure)

TOP = [("RIAIR", 0.0044), ("KAIST AI (ver1)", 0.0054), ("KAIST AI (ver2)", 0.0056), ("OSI AI", 0.0058),
       ("MSUNet-V3", 0.0108)]


def test_the_palette_is_distinct_and_the_check_catches_look_alikes():
    for a, b in itertools.combinations(DISTINCT_COLOURS, 2):
        assert colour_distance(a, b) >= MIN_COLOUR_DISTANCE, (a, b)
    fig = Figure()
    ax = fig.subplots()
    ax.plot([0, 1], color="#DE8F05", label="uniform LS")  # seaborn 'colorblind' C1 and C3: the two oranges of 02
    ax.plot([1, 0], color="#D55E00", label="uniform LS (ε 0.3)")
    ax.plot([1, 1], color="#0072B2", label="CE")
    ax.legend()
    assert any("look alike" in p for p in figure_problems(fig))


def test_bars_on_a_log_axis_are_caught():
    fig = Figure()
    ax = fig.subplots()
    ax.barh(["a", "b"], [0.004, 0.02])
    ax.set_xscale("log")
    assert any("bars on a log axis" in p for p in figure_problems(fig))


def test_05_leaderboard_dots_on_log_axis_and_its_data_label():
    fig = leaderboard_figure(TOP, {"micronet_v1_pr_60": 0.0054454, "micronet_v2_pr_60": 0.0056215,
                                   "micronet_v2_pr_45": 0.0061})
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and not ax.containers  # no bars
    assert figure_problems(fig) == []
    # the recomputed ver1 point sits on ver1's row, the ver2 ones on ver2's
    marks = [line for line in ax.get_lines() if line.get_marker() == "x"]
    assert {(float(m.get_xdata()[0]), float(m.get_ydata()[0])) for m in marks} == {(0.0054454, 1), (0.0056215, 2),
                                                                                  (0.0061, 2)}
    # The caption's data label names what the figure plots (published scores, counts), not the run's images.
    assert "published" in LEADERBOARD_DATA and "CIFAR-10" not in LEADERBOARD_DATA


def _curves():
    rows = []
    for label in ("CE", "CE + ortho", "uniform LS", "weighted LS + ortho", "uniform LS (ε 0.3) + ortho"):
        for seed in (0, 1):
            for epoch in (1, 2, 3):
                rows.append(dict(label=label, seed=seed, global_epoch=epoch, val_loss=2.3 - 0.1 * epoch + 0.01 * seed,
                                 val_top1=20 + epoch + seed, loss_cls=2.0 if "LS" in label else 1.5))
    return pd.DataFrame(rows)


def test_02_curves_plot_one_objective_and_distinct_colours():
    fig = ablation_curves_figure(_curves(), accuracy="val_top1", seeds=2)
    assert figure_problems(fig) == []
    loss_axis = fig.axes[0]
    assert "cross-entropy" in loss_axis.get_ylabel() and "val" in loss_axis.get_ylabel()
    plotted = np.concatenate([line.get_ydata() for line in loss_axis.get_lines() if len(line.get_ydata())])
    assert 1.9 < plotted.min() and plotted.max() < 2.3  # val_loss, never the training objectives (1.5 / 2.0)
    labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert {"CE", "uniform LS", "weighted LS", "uniform LS (ε 0.3)"} <= set(labels)


def test_01_blocks_in_network_order():
    assert block_order(["head", "block 10", "stem", "block 02"]) == ["stem", "block 02", "block 10", "head"]
    frame = pd.DataFrame({"params": [10, 20, 30], "ops": [1, 2, 3]}, index=["head", "stem", "block 00"])
    fig = per_block_figure({"v1": frame, "v2": frame * 2})
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert ticks == ["stem", "block 00", "head"]
    assert figure_problems(fig) == []


def test_03_grid_colour_scale_spans_the_interval():
    means = pd.DataFrame([[30.5, 29.5]], index=pd.Index([2], name="N"), columns=pd.Index([5, 9], name="M"))
    fig = grid_heatmap(means, half_width=4.0, label="val top-1 (%)", title="t")
    low, high = fig.axes[0].collections[0].get_clim()
    assert high - low >= 8.0  # a one-point difference inside a ±4-point interval is not the whole colour range
    assert figure_problems(fig) == []
