"""What an augmentation search found, as tables and figures for notebook 03 (issue #29, docs/method.md §7.6).

- ``trials_frame(result)``: every trial of every study (fold, round, trial, value, best so far), read
  from the search's Optuna storage.
- ``history_figure(trials)``: the optimisation history per fold (each trial's value, the running best).
- ``top_subpolicies(result)``: the kept policies' sub-policies, best policy first, as a table.
- ``policy_distribution_figure(stats)``: per op, how often it fires per image and its mean level, for the
  searched policy beside the released CIFAR-100 sets (``released.policy_op_stats`` of all of them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd
from matplotlib.figure import Figure

from micronet_lib.augment.search import open_storage, remove_duplicates, study_name

if TYPE_CHECKING:
    from micronet_lib.experiments.augment_search import SearchResult

__all__ = ["trials_frame", "history_figure", "top_subpolicies", "policy_distribution_figure"]


def trials_frame(result: "SearchResult") -> pd.DataFrame:
    """One row per finished trial: fold, round, trial, value, best so far (in the study's direction)."""
    import optuna

    storage = open_storage(result.storage)
    rows = []
    for k in range(result.settings.folds):
        for r in range(result.settings.rounds):
            study = optuna.load_study(study_name=f"{result.search_id}/{study_name(k, r)}", storage=storage)
            best = None
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
                better = max if result.settings.direction == "maximize" else min
                best = t.value if best is None else better(best, t.value)
                rows.append(dict(fold=k + 1, round=r + 1, trial=t.number + 1, value=t.value, best_so_far=best))
    storage.remove_session()
    return pd.DataFrame(rows)


def history_figure(trials: pd.DataFrame, *, ylabel: str = "D_A top-1 (%)") -> Figure:
    """One panel per fold: each trial's value (dots) and the best so far (line), one colour per round."""
    folds = sorted(trials["fold"].unique())
    fig = Figure(figsize=(3.2 * len(folds), 2.8), layout="constrained")
    axes = fig.subplots(1, len(folds), squeeze=False, sharey=True)[0]
    for ax, fold in zip(axes, folds):
        part = trials[trials["fold"] == fold]
        for i, (rnd, rows) in enumerate(part.groupby("round")):
            ax.plot(rows["trial"], rows["value"], "o", ms=3, alpha=0.5, color=f"C{i}")
            ax.step(rows["trial"], rows["best_so_far"], where="post", color=f"C{i}", label=f"round {rnd}: best so far")
        ax.set_title(f"fold {fold}")
        ax.set_xlabel("trial")
    axes[0].set_ylabel(ylabel)
    axes[0].legend(fontsize=7, loc="lower right")
    return fig


def top_subpolicies(result: "SearchResult", n: int | None = None) -> pd.DataFrame:
    """The kept policies' sub-policies (duplicates within a policy removed, as merged), best policy first."""
    rows = []
    ordered = sorted(result.kept, key=lambda row: (-row["value"] if result.settings.direction == "maximize"
                                                   else row["value"], row["fold"], row["rank"]))
    for row in ordered:
        for (op1, p1, l1), (op2, p2, l2) in remove_duplicates(row["policy"]):
            rows.append(dict(fold=row["fold"] + 1, round=row["round"] + 1, rank=row["rank"] + 1, value=row["value"],
                             op_1=op1, p_1=p1, level_1=l1, op_2=op2, p_2=p2, level_2=l2))
    table = pd.DataFrame(rows)
    return table if n is None else table.head(n)


def policy_distribution_figure(stats: pd.DataFrame, *, highlight: str | None = None) -> Figure:
    """Two panels over the ops: applications per image and mean level, one bar per policy set (same plot).

    ``stats``: ``released.policy_op_stats`` of the searched policy and the released sets together;
    ``highlight``: the searched set's name, drawn first and hatched.
    """
    sets = list(dict.fromkeys(stats["set"]))
    if highlight in sets:
        sets = [highlight] + [s for s in sets if s != highlight]
    ops = list(stats.groupby("op")["per_image"].sum().sort_values(ascending=False).index)
    fig = Figure(figsize=(11, 6.2), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True)
    width = 0.8 / len(sets)
    for j, name in enumerate(sets):
        part = stats[stats["set"] == name].set_index("op").reindex(ops)
        xs = [i + (j - (len(sets) - 1) / 2) * width for i in range(len(ops))]
        style = dict(hatch="//", edgecolor="black") if name == highlight else {}
        axes[0].bar(xs, part["per_image"].fillna(0.0), width, label=name, color=f"C{j}", **style)
        axes[1].bar(xs, part["mean_level"], width, color=f"C{j}", **style)
    axes[0].set_ylabel("applications per image")
    axes[1].set_ylabel("mean level (magnitude, 0–1)")
    axes[1].set_xticks(range(len(ops)), ops, rotation=45, ha="right")
    axes[0].legend(fontsize=8, ncols=min(len(sets), 5), loc="upper right")
    return fig
