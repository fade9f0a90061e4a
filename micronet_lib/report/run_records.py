"""What a report needs from a training run's checkpoint, kept in the run's committed record (issue #11).

Checkpoints (``*.pt``) are never committed, so a fresh clone re-rendering a committed results set has no
weights. The score and tables computed from a checkpoint are kept in ``derived/<name>.json`` of the run
(``runstore.derived``, re-exported here as ``derived`` / ``CheckpointAbsent``); when neither the record nor
the checkpoint is there, the notebook gets ``None`` and a visible note naming the runs, never a
``FileNotFoundError`` traceback.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pandas as pd
import torch.nn as nn

from micronet_lib.models import load_checkpoint
from micronet_lib.notes import note
from micronet_lib.runstore.derived import CheckpointAbsent, derived
from micronet_lib.scoring import count

__all__ = ["CheckpointAbsent", "derived", "run_scores", "run_table"]

log = logging.getLogger(__name__)


def _note_absent(what: str, runs: Sequence[str]) -> None:
    if runs:
        note(f"{what} of run(s) {', '.join(runs)} could not be shown: the checkpoint is not in this copy of the "
             "results set (checkpoints are not committed) and the run's record does not hold it. Retrain with "
             "`micronet reproduce` of this profile (scratch set) to compute it.")


def run_scores(summaries: Sequence[Mapping[str, Any]], *, convention: str = "kaist") -> list[dict[str, Any] | None]:
    """The MicroNet score summary (``scoring.count(...).summary``) of each run's selected weights, or None
    (with one visible note) for runs whose checkpoint and record are both absent."""

    def compute(path: Path) -> dict[str, Any]:
        net = load_checkpoint(path)
        heads = [m.out_features for m in net.modules() if isinstance(m, nn.Linear)]
        # the head size goes with the score: a 10-class model's score is not a CIFAR-100 entry's
        return dict(count(net, convention=convention).summary, head_classes=heads[-1] if heads else None)

    out, absent = [], []
    for s in summaries:
        try:
            out.append(derived(s, f"score_{convention}", compute, key={"convention": convention}))
        except CheckpointAbsent as exc:
            log.info("%s", exc)
            out.append(None)
            absent.append(str(s.get("run_id")))
    _note_absent(f"The score ('{convention}')", absent)
    return out


def run_table(summary: Mapping[str, Any], name: str, compute: Callable[[Path], "pd.DataFrame"], *,
              key: Mapping[str, Any], what: str, checkpoint: str = "best.pt") -> "pd.DataFrame | None":
    """A DataFrame computed from the run's checkpoint (e.g. a pruning curve), kept in its record; None
    with a visible note naming ``what`` when neither is here."""
    def table_record(path: Path) -> dict[str, Any]:
        # Records are written with sorted keys: the column order is kept beside them, so a table read back
        # from the record (a re-render) has the columns of the table computed from the checkpoint.
        frame = compute(path)
        return {"columns": [str(c) for c in frame.columns], "records": frame.to_dict(orient="records")}

    try:
        value = derived(summary, name, table_record, key=key, checkpoint=checkpoint)
    except CheckpointAbsent as exc:
        log.info("%s", exc)
        _note_absent(what, [str(summary.get("run_id"))])
        return None
    if isinstance(value, list):  # a record written before the column order was kept
        return pd.DataFrame.from_records(value)
    return pd.DataFrame.from_records(value["records"], columns=value["columns"])
