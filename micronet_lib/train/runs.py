"""Run folders, checkpoints and summaries: ``results/runs/<config hash>/``.

A run folder holds ``config.json`` (the resolved config with its deviations), ``metrics.jsonl`` (one
JSON line per epoch), ``summary.json`` (written at the end, or when the run stops on a non-finite
loss) and the checkpoints ``last.pt`` (everything needed to resume) and ``best.pt`` (the selected
weights of the current cycle). Checkpoints are ignored by git; the text files are small and are
what the notebooks read. Every file goes through the run store (:mod:`micronet_lib.runstore.store`):
atomic writes, checksummed checkpoints, verified reads, one lock per run.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from micronet_lib.repo import REPO
from micronet_lib.runstore import store
from micronet_lib.train.config import TrainConfig

#: The run store folder of this process (set by the notebook pipeline and the sweep executors).
RUNS_ENV = "MICRONET_RUNS"
# Set (non-empty) by `micronet reproduce --rerender`: run_or_load reads finished runs back and never trains.
NO_TRAINING_ENV = "MICRONET_NO_TRAINING"

__all__ = [
    "RUNS_ENV",
    "NO_TRAINING_ENV",
    "RunSummary",
    "runs_root",
    "run_dir_for",
    "finished_summary",
    "finished_summary_or_none",
    "save_checkpoint",
    "load_checkpoint",
    "rng_state",
    "set_rng_state",
    "read_metrics",
    "append_metrics",
    "read_summary",
    "write_summary",
    "LAST",
    "BEST",
]

LAST = store.LAST
BEST = store.BEST


class RunSummary(dict):
    """The result of a run, a plain JSON-able dict with attribute access.

    Keys: ``run_id``, ``run_dir``, ``status`` (``finished`` | ``stopped``), ``config`` (dict),
    ``profile``, ``deviations``, ``selection_note``, ``epochs`` (completed), ``epochs_total``,
    ``seconds``, ``final_{val,test}_{top1,top5}`` (last epoch), ``best_{val,test}_{top1,top5}``,
    ``best_cycle``/``best_epoch`` (the selected epoch of the last cycle: the stage result, docs/method.md
    §5.4), ``cycle_best`` (one entry per cycle), ``data_id``, ``data``, ``library_version``.
    Missing metrics (no validation split) are ``None``.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def train_config(self) -> TrainConfig:
        return TrainConfig.from_dict(self["config"])


def _repo_results() -> Path | None:
    root = REPO
    return root / "results" / "runs" if (root / "pyproject.toml").is_file() else None


def runs_root(root: str | os.PathLike | None = None) -> Path:
    """``root``, else ``$MICRONET_RUNS``, else ``<repo>/results/runs`` (``./results/runs`` if not a checkout).

    An empty ``root`` (``--runs-dir ""``) is refused: ``Path("")`` is the current folder, where runs
    would land among whatever else lives there."""
    if root is not None:
        if not str(root).strip():
            raise store.RunStoreError('--runs-dir is empty ("" would train into the current folder); give a folder, '
                                      "e.g. --runs-dir results/runs, or leave the option out")
        return Path(root)
    env = os.environ.get(RUNS_ENV)
    if env:
        return Path(env)
    return _repo_results() or Path.cwd() / "results" / "runs"


def run_dir_for(config: TrainConfig, root: str | os.PathLike | None = None) -> Path:
    return runs_root(root) / config.config_hash()


# ---------------------------------------------------------------------- RNG
# RNG states are stored as tensors and plain numbers so checkpoints load with ``weights_only=True``.
def rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, mt, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "mt": torch.tensor(mt, dtype=torch.int64), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["mt"].tolist()), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------- files (through the run store)
def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Atomic, checksummed ``torch.save`` of a checkpoint dict; ``last.pt`` keeps its predecessor."""
    return store.save_checkpoint(path, payload, keep_previous=Path(path).name == LAST)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load one of our checkpoints on CPU, weights-only, verified against its sha256."""
    return store.load_checkpoint(path)


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """Append one JSON line. Rewritten atomically so a kill never leaves half a line."""
    store.write_metrics(run_dir, read_metrics(run_dir) + [record])


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    return store.read_metrics(run_dir)


def truncate_metrics(run_dir: Path, *, through_step: int) -> None:
    """Drop lines written after the checkpoint we resume from (global epoch index > through_step)."""
    store.write_metrics(run_dir, [r for r in read_metrics(run_dir) if r["global_epoch"] <= through_step])


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    # The absolute folder is machine-specific: keep it out of the (committed) file.
    store.write_json(run_dir / "summary.json", {k: v for k, v in summary.items() if k != "run_dir"})


def read_summary(run_dir: str | os.PathLike) -> RunSummary | None:
    """``<run_dir>/summary.json`` (config, status, best/final accuracy, curves) as a ``RunSummary``, or None
    when the run has no summary yet."""
    path = Path(run_dir) / "summary.json"
    if not path.exists():
        return None
    data = store.read_json(path)
    if not isinstance(data, dict):
        raise store.RunStoreError(f"{path} holds a {type(data).__name__}, not a run summary; {store.repair_hint(path)}")
    return RunSummary(data, run_dir=str(Path(run_dir)))


def finished_summary(config: TrainConfig, root: str | os.PathLike | None = None) -> RunSummary | None:
    """The summary of ``config``'s run when its folder holds a finished run of exactly this config (what
    ``run_or_load`` reads back instead of training), else None; a corrupt summary raises ``RunStoreError``."""
    summary = read_summary(run_dir_for(config, root))
    if summary is not None and summary.get("status") == "finished" and summary.get("config") == config.to_dict():
        return summary
    return None


def finished_summary_or_none(config: TrainConfig, root: str | os.PathLike | None = None) -> RunSummary | None:
    """``finished_summary``, with an unreadable summary (a ``ValueError``: ``RunStoreError``, bad JSON) taken as
    not finished: the run is then (re)submitted, and ``run_or_load`` repairs or reports it. For callers that
    only ask whether a run still has to be trained (the sweep executors, the ETA line)."""
    try:
        return finished_summary(config, root)
    except ValueError:
        return None
