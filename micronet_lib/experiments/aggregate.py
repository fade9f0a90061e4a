"""Training summaries → tables: one row per run, mean ± std over seeds, learning curves (issue #8).

Where the runs' per-image outcomes on the whole test split exist (``outcomes.test_outcomes``: kept in the
run records, computed once from a checkpoint), ``runs_frame`` adds their top-1 as ``ALL_TEST`` and keeps the
outcomes in ``df.attrs["outcomes"]``; ``paired`` and ``comparison_table`` then pair the arms by seed *and*
image (``stats.paired_effect``, issue #28) and state the minimum detectable effect of the design.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Mapping, Sequence

import pandas as pd

from micronet_lib.experiments.sweeps import run_configs
from micronet_lib.notes import note
from micronet_lib.progress import bars_enabled
from micronet_lib.report.power import components_from_outcomes, predict
from micronet_lib.report.stats import Interval, mean_interval, paired_difference, paired_effect
from micronet_lib.runstore.derived import CheckpointAbsent
from micronet_lib.train.config import TrainConfig
from micronet_lib.train.eta import announce
from micronet_lib.train.outcomes import test_outcomes
from micronet_lib.train.runs import RunSummary, read_metrics

__all__ = ["train_all", "run_row", "runs_frame", "mean_std", "curves_frame", "METRICS", "ALL_TEST", "cell_intervals",
           "paired", "paired_design", "comparison_table", "default_metric"]

log = logging.getLogger(__name__)

# Summary metrics a study table reports (RunSummary keys; best_* = the selected epoch, docs/method.md §5.7).
METRICS = ("best_val_top1", "best_test_top1", "final_test_top1")
# Top-1 (%) of the selected weights on every test image (the runs' per-image outcome records).
ALL_TEST = "test_top1_all"


def train_all(configs: Sequence[TrainConfig], *, progress: bool | None = None, executor=None) -> list[RunSummary]:
    """``run_or_load`` each config through ``executor`` (default: in this process, in order): finished
    runs are read back, the others trained (or resumed). Summaries come back in ``configs`` order; a
    failed run raises ``RuntimeError`` naming it (after the other runs are done).

    ``progress`` (default: unless a headless report run turned bars off, ``progress.bars_enabled``)
    first prints how long the training will take (``eta.announce``), then shows progress bars
    (``tqdm.auto``: widgets in JupyterLab, text in a terminal).
    """
    configs = list(configs)
    for c in configs:
        if not isinstance(c, TrainConfig):
            raise ValueError(f"train_all expects TrainConfig objects, got {type(c).__name__}")
    progress = bars_enabled() if progress is None else progress
    if progress and configs:
        announce(configs)
    report = run_configs(configs, executor=executor, progress=progress)
    if report.failures:
        raise RuntimeError(f"{len(report.failures)} run(s) failed: "
                           + "; ".join(f"{k}: {v}" for k, v in report.failures.items()))
    return [report.summaries[c.config_hash()] for c in configs]


def run_row(summary: Mapping[str, Any], **labels: Any) -> dict[str, Any]:
    """One table row: ``labels`` first, then the run's id, seed, recipe knobs and metrics. No wall time: a
    published table holds no stopwatch reading, so rebuilding a set reproduces it byte for byte (issue #28;
    the time of each run stays in its summary, of each notebook in the manifest)."""
    cfg = summary["config"]
    row = dict(labels)
    row.update(
        run=summary["run_id"], seed=cfg["seed"], loss=cfg["loss"], ortho_coef=cfg["ortho_coef"],
        augment=cfg["augment"], mix=cfg["mix"],
        prune_rates="-" if cfg.get("prune_rates") is None else "/".join(f"{r:g}" for r in cfg["prune_rates"]),
        epochs=summary.get("epochs"),
    )
    row.update({m: summary.get(m) for m in METRICS})
    return row


def runs_frame(summaries: Sequence[Mapping[str, Any]], labels: Sequence[Mapping[str, Any]] | None = None) -> pd.DataFrame:
    """One row per run (``run_row``); ``labels[i]`` (e.g. ``{"cell": "CE + ortho"}``) labels run i."""
    labels = list(labels) if labels is not None else [{}] * len(summaries)
    if len(labels) != len(summaries):
        raise ValueError(f"got {len(summaries)} summaries but {len(labels)} labels")
    df = pd.DataFrame([run_row(s, **lab) for s, lab in zip(summaries, labels)])
    found = _outcomes(summaries)
    if found:
        df[ALL_TEST] = [found[s["run_id"]].top1 if s["run_id"] in found else None for s in summaries]
        df.attrs["outcomes"] = found
    return df


def _outcomes(summaries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``{run id: outcomes.Outcomes}`` of the finished runs whose record or checkpoint gives them."""
    out = {}
    for s in summaries:
        if s.get("status", "finished") != "finished" or "run_dir" not in s:
            continue
        try:
            out[s["run_id"]] = test_outcomes(s)
        except CheckpointAbsent as exc:
            log.info("%s", exc)
    return out


def default_metric(df: pd.DataFrame) -> str:
    """``ALL_TEST`` where every run of ``df`` has its per-image outcomes, else the selected epoch's test top-1."""
    return ALL_TEST if ALL_TEST in df.columns and df[ALL_TEST].notna().all() else "best_test_top1"


def _fmt(mean: float, std: float, n: int, digits: int) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    if n < 2 or std is None or math.isnan(std):
        return f"{mean:.{digits}f} (n={n})"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def mean_std(df: pd.DataFrame, by: str | Sequence[str], metrics: Sequence[str] = ("best_test_top1",), *,
             digits: int = 2) -> pd.DataFrame:
    """Mean and sample std (ddof 1) of ``metrics`` over the runs of each ``by`` group, in first-seen order.

    Columns: ``n`` (runs), ``<metric>_mean``, ``<metric>_std`` (NaN with one run) and ``<metric>``, the
    "mean ± std" text the Markdown table shows.
    """
    by = [by] if isinstance(by, str) else list(by)
    missing = [c for c in (*by, *metrics) if c not in df.columns]
    if missing:
        raise ValueError(f"columns {missing} not in the runs table (columns: {', '.join(df.columns)})")
    grouped = df.groupby(by, sort=False)
    out = grouped.size().to_frame("n")
    for m in metrics:
        values = grouped[m].agg(["mean", "std"])
        out[f"{m}_mean"] = values["mean"]
        out[f"{m}_std"] = values["std"]
        out[m] = [_fmt(a, s, n, digits) for a, s, n in zip(values["mean"], values["std"], out["n"])]
    return out


def curves_frame(summaries: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> pd.DataFrame:
    """Per-epoch metrics of each run (``metrics.jsonl``), long format with ``label`` and ``seed`` columns.

    A run whose ``metrics.jsonl`` is missing, corrupt or shorter than its summary's ``epochs`` is named in a
    visible note (``results.note``): a figure never loses a curve silently."""
    if len(labels) != len(summaries):
        raise ValueError(f"got {len(summaries)} summaries but {len(labels)} labels")
    frames, missing = [], []
    for s, label in zip(summaries, labels):
        try:
            records = read_metrics(s["run_dir"])
        except ValueError as exc:  # a corrupt line (RunStoreError): the curve is left out, and the note says why
            records, why = [], str(exc).split(";")[0]
        else:
            why = f"its metrics.jsonl holds {len(records)} of {s.get('epochs')} epochs"
        if len(records) != s.get("epochs"):
            missing.append(f"{s['run_id']} ({label}: {why})")
        if records:
            frames.append(pd.DataFrame(records).assign(label=label, seed=s["config"]["seed"], run=s["run_id"]))
    if missing:
        note("Learning curves incomplete for run(s) " + "; ".join(missing) + ". A run with its last.pt rebuilds "
             "metrics.jsonl when read back; in a committed set, restore the file with `git checkout`, or retrain "
             "with `micronet reproduce` of this profile (scratch set).")
    if not frames:
        return pd.DataFrame(columns=["label", "seed", "run", "global_epoch"])
    return pd.concat(frames, ignore_index=True)


def _by_seed(df: pd.DataFrame, by: str, label: Any, metric: str) -> dict[int, float]:
    part = df[df[by] == label]
    return {int(s): float(v) for s, v in zip(part["seed"], part[metric]) if v is not None and not pd.isna(v)}


def cell_intervals(df: pd.DataFrame, by: str, metric: str = "best_test_top1") -> dict[Any, "Interval"]:
    """``{cell: stats.mean_interval over its seeds}`` in first-seen order."""
    return {label: mean_interval(list(_by_seed(df, by, label, metric).values())) for label in dict.fromkeys(df[by])}


def _outcomes_by_seed(df: pd.DataFrame, by: str, label: Any) -> dict[int, Any]:
    found = df.attrs.get("outcomes", {})
    part = df[df[by] == label]
    return {int(seed): found[run] for seed, run in zip(part["seed"], part["run"])}


def paired(df: pd.DataFrame, by: str, treatment: Any, baseline: Any, metric: str | None = None) -> "Interval":
    """``treatment − baseline`` between two cells of a runs table: with ``metric=ALL_TEST`` (the default where
    every run has per-image outcomes) paired by seed and image (``stats.paired_effect``), otherwise per seed
    (``stats.paired_difference``)."""
    return paired_design(df, by, treatment, baseline, metric)[0]


def paired_design(df: pd.DataFrame, by: str, treatment: Any, baseline: Any, metric: str | None = None):
    """``(interval, prediction)``: ``paired``'s interval and, where it rests on per-image outcomes, the
    ``power.Prediction`` of the same design (its minimum detectable effect at 80 % power); else None."""
    metric = metric or default_metric(df)
    missing = [c for c in (treatment, baseline) if c not in set(df[by])]
    if missing:
        raise ValueError(f"cell(s) {missing} not in column {by!r} (cells: {', '.join(map(str, dict.fromkeys(df[by])))})")
    if metric != ALL_TEST:
        return paired_difference(_by_seed(df, by, treatment, metric), _by_seed(df, by, baseline, metric)), None
    t, b = _outcomes_by_seed(df, by, treatment), _outcomes_by_seed(df, by, baseline)
    shared = sorted(set(t) & set(b))
    iv = paired_effect({s: t[s].correct for s in shared}, {s: b[s].correct for s in shared})
    if len(shared) < 2:
        return iv, None
    comp = components_from_outcomes(t, b)
    return iv, predict(comp, seeds=comp.seeds, images=comp.images)


def comparison_table(df: pd.DataFrame, by: str, baseline: Any, metric: str | None = None, *,
                     unit: str = "%") -> pd.DataFrame:
    """One row per cell: seeds, mean, 95 % t interval, std (only where every cell has n ≥ 2) and the paired
    difference to ``baseline`` with its interval (docs/verdicts.md: by seed and image where the runs have
    per-image outcomes, ``metric`` defaulting to ``ALL_TEST``; then also the minimum detectable effect at
    80 % power of this design). Blank where a value cannot exist."""
    metric = metric or default_metric(df)
    cells = cell_intervals(df, by, metric)
    if baseline not in cells:
        raise ValueError(f"baseline {baseline!r} is not a cell of {by!r}: {', '.join(map(str, cells))}")
    rows = []
    for label, iv in cells.items():
        row = {by: label, "seeds": iv.n, f"mean ({unit})": iv.estimate,
               f"95 % CI low ({unit})": iv.low, f"95 % CI high ({unit})": iv.high}
        if label == baseline:
            row.update({f"Δ vs {baseline} (points)": None, "Δ 95 % CI low": None, "Δ 95 % CI high": None})
            if metric == ALL_TEST:
                row["Δ MDE 80 % (points)"] = None
        else:
            d, pred = paired_design(df, by, label, baseline, metric)
            row.update({f"Δ vs {baseline} (points)": d.estimate, "Δ 95 % CI low": d.low, "Δ 95 % CI high": d.high})
            if metric == ALL_TEST:
                row["Δ MDE 80 % (points)"] = pred.mde if pred is not None else None
        rows.append(row)
    out = pd.DataFrame(rows)
    if all(iv.n >= 2 for iv in cells.values()):
        out.insert(3, f"std ({unit})", [float(df[df[by] == label][metric].std()) for label in cells])
    return out.astype(object).where(out.notna(), None)
