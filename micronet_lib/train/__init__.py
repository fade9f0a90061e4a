"""The training engine (docs/method.md §5, §6, §8.4): one ``TrainConfig`` drives ``fit``.

- :mod:`.config`: ``TrainConfig`` and the ``smoke`` / ``cpu`` / ``paper`` profiles (deviations named).
- :mod:`.schedule`: the authors' step-at-epoch-start cosine with warm restarts (§5.4).
- :mod:`.engine`: ``fit`` (resumable, seeded per epoch), ``resume`` and ``run_or_load``; the loop reads top
  to bottom, its pieces live in :mod:`.epoch` (one epoch's steps) and :mod:`.records` (what a run writes).
- :mod:`.runs`: ``results/runs/<config hash>/`` folders and checkpoints, through
  :mod:`micronet_lib.runstore` (locks, checksums, verified reads).
- :mod:`.eta`: how long a training cell will take, said before it starts.
- :mod:`.outcomes`: a finished run's per-image test outcomes, kept in its record (issue #28).
"""

from micronet_lib.train.config import PROFILES, TrainConfig, list_profiles, parse_overrides
from micronet_lib.train.engine import NonFiniteLossError, fit, resume, run_or_load
from micronet_lib.train.runs import RunSummary, finished_summary, read_metrics, read_summary, run_dir_for, runs_root
from micronet_lib.train.schedule import cosine_lr, lr_at, step_lr

__all__ = [
    "PROFILES",
    "TrainConfig",
    "list_profiles",
    "parse_overrides",
    "NonFiniteLossError",
    "fit",
    "resume",
    "RunSummary",
    "read_metrics",
    "read_summary",
    "finished_summary",
    "run_dir_for",
    "run_or_load",
    "runs_root",
    "cosine_lr",
    "lr_at",
    "step_lr",
]
