"""The training engine (docs/method.md §5, §6, §8.4): one ``TrainConfig`` drives ``fit``.

- :mod:`.config`: ``TrainConfig`` and the ``smoke`` / ``cpu`` / ``paper`` profiles (deviations named).
- :mod:`.schedule`: the authors' step-at-epoch-start cosine with warm restarts (§5.4).
- :mod:`.engine`: ``fit`` (resumable, seeded per epoch) and ``resume``.
- :mod:`.runs`: ``results/runs/<config hash>/`` folders, checkpoints, ``run_or_load``.
- :mod:`.bench`: images/s of a training step for ``micronet bench train``.
"""

from micronet_lib.train.config import PROFILES, TrainConfig, list_profiles, parse_overrides
from micronet_lib.train.engine import NonFiniteLossError, fit, resume
from micronet_lib.train.runs import RunSummary, read_metrics, read_summary, run_dir_for, run_or_load, runs_root
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
    "run_dir_for",
    "run_or_load",
    "runs_root",
    "cosine_lr",
    "lr_at",
    "step_lr",
]
