"""Values computed from a run's checkpoint, kept in its folder (issue #11): ``derived/<name>.json``.

Checkpoints (``*.pt``) are never committed, so a fresh clone re-rendering a committed results set has the
runs' ``config.json`` / ``metrics.jsonl`` / ``summary.json`` but no weights. A value computed from a
checkpoint (the model's score, a pruning curve, per-image test outcomes) is therefore stored in the run's
folder with the inputs it depends on (``key``) the first time it is computed, and read back from there
afterwards; when neither the record nor the checkpoint is there, ``CheckpointAbsent`` says so.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Mapping

from micronet_lib.fileio import atomic_write_json
from micronet_lib.runstore.folder import tracked_by_git

__all__ = ["CheckpointAbsent", "derived", "DERIVED"]

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
