"""What a report needs from a training run's checkpoint, kept in the run's committed record (issue #11).

Checkpoints (``*.pt``) are never committed, so a fresh clone re-rendering a committed results set has the
runs' ``config.json`` / ``metrics.jsonl`` / ``summary.json`` but no weights. A value a notebook computes
from a checkpoint (the model's score, a pruning curve) is therefore stored in the run's folder, in
``derived/<name>.json`` with the inputs it depends on (``key``), the first time it is computed, and read
back from there afterwards. When neither the record nor the checkpoint is there, the notebook gets
``None`` and a visible note naming the runs, never a ``FileNotFoundError`` traceback.

The run store of issue #18 will own reading run folders and raise its own "checkpoint absent" error;
``_checkpoint`` below is the one place to switch to it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from micronet_lib.fileio import atomic_write_json
from micronet_lib.runstore.folder import tracked_by_git
from micronet_lib.notes import note
from micronet_lib.models import load_checkpoint
from micronet_lib.scoring import count

__all__ = ["CheckpointAbsent", "derived", "run_scores", "run_table"]

log = logging.getLogger(__name__)

DERIVED = "derived"


class CheckpointAbsent(FileNotFoundError):
    """A run's checkpoint is not on disk (not committed) and its record lacks the value asked for."""


def _checkpoint(run_dir: Path, name: str) -> Path:
    path = run_dir / name
    if not path.is_file():
        raise CheckpointAbsent(f"{path} is not here (checkpoints are not committed)")
    return path


def derived(summary: Mapping[str, Any], name: str, compute: Callable[[Path], Any], *,
            key: Mapping[str, Any] | None = None, checkpoint: str = "best.pt") -> Any:
    """``compute(<checkpoint path>)`` of the run ``summary``, cached as ``<run_dir>/derived/<name>.json``.

    The stored value is used when its ``key`` (the inputs besides the weights) matches; otherwise it is
    recomputed from the checkpoint, or ``CheckpointAbsent`` is raised when the checkpoint is absent.
    ``compute`` must return something JSON can hold.
    """
    run_dir = Path(summary["run_dir"])
    key = json.loads(json.dumps(dict(key or {}), sort_keys=True, default=str))
    record = run_dir / DERIVED / f"{name}.json"
    stored, corrupt = _read_record(record)
    if stored is not None and stored.get("key") == key:
        return stored["value"]
    try:
        path = _checkpoint(run_dir, checkpoint)
    except CheckpointAbsent as exc:
        if corrupt:

            fix = (f"restore it with `git checkout -- {record}`" if tracked_by_git(record) else
                   f"delete it and retrain the run (`micronet reproduce` of this profile) to compute it again")
            raise ValueError(f"{record} is corrupt ({corrupt}) and {exc}, so it cannot be recomputed; {fix}") from None
        raise CheckpointAbsent(f"run {summary.get('run_id', run_dir.name)}: {exc}, and its record has no "
                               f"{name!r} for {key}") from None
    if corrupt:
        log.warning("%s is corrupt (%s); recomputing it from %s", record, corrupt, path)
    value = compute(path)
    atomic_write_json(record, {"key": key, "value": value})
    return value


def _read_record(record: Path) -> tuple[dict[str, Any] | None, str | None]:
    """``(stored record, None)``, ``(None, None)`` when absent, ``(None, why)`` when unreadable or of the wrong shape."""
    if not record.is_file():
        return None, None
    try:
        stored = json.loads(record.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"{type(exc).__name__}: {str(exc)[:80]}"
    if not isinstance(stored, dict) or "value" not in stored:
        return None, "not a {\"key\", \"value\"} record"
    return stored, None


def _note_absent(what: str, runs: Sequence[str]) -> None:
    if runs:

        note(f"{what} of run(s) {', '.join(runs)} could not be shown: the checkpoint is not in this copy of the "
             "results set (checkpoints are not committed) and the run's record does not hold it. Retrain with "
             "`micronet reproduce` of this profile (scratch set) to compute it.")


def run_scores(summaries: Sequence[Mapping[str, Any]], *, convention: str = "kaist") -> list[dict[str, Any] | None]:
    """The MicroNet score summary (``scoring.count(...).summary``) of each run's selected weights, or None
    (with one visible note) for runs whose checkpoint and record are both absent."""

    def compute(path: Path) -> dict[str, Any]:
        import torch.nn as nn


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
    import pandas as pd

    try:
        records = derived(summary, name, lambda p: compute(p).to_dict(orient="records"), key=key, checkpoint=checkpoint)
    except CheckpointAbsent as exc:
        log.info("%s", exc)
        _note_absent(what, [str(summary.get("run_id"))])
        return None
    return pd.DataFrame.from_records(records)
