"""The companion's studies (issue #8) as library calls, so notebooks 02–04 stay thin.

- :mod:`.configs`: the ``TrainConfig`` of every cell of a study under a notebook profile (the
  regulariser ablation, the augmentation comparison and RandAugment grid, dense → iterative /
  one-shot pruning), built from the notebook parameters (``pipeline.PARAMS``).
- :mod:`.studies`: the training grid of each study (``study_configs``), shared by the notebooks and
  ``micronet sweep``.
- :mod:`.executors`: run the unfinished configs of a grid in process (default) or as Ray tasks
  (``run_configs``, ``sweep``; issue #15).
- :mod:`.aggregate`: training summaries → tables (one row per run, mean ± std over seeds) and
  learning curves.
- :mod:`.released`: analyses of the released checkpoints that need no data: orthogonality of every
  1×1 layer, singular-value spectra, the class-similarity matrix ordered by CIFAR-100 superclass,
  Fast-AutoAugment policy statistics, the pruning chain and one-shot pruning curves.
"""

from micronet_lib.experiments.aggregate import (
    ALL_TEST,
    cell_intervals,
    default_metric,
    comparison_table,
    curves_frame,
    mean_std,
    paired,
    paired_design,
    run_row,
    runs_frame,
    train_all,
)
from micronet_lib.experiments.configs import (
    ABLATION_CELLS,
    CLAIM_CELLS,
    CLAIM_PROFILES,
    ablation_cells,
    MATCHED_EPSILON_CELL,
    AblationCell,
    ablation_config,
    augment_config,
    base_config,
    dense_config,
    iterative_config,
    oneshot_config,
    parse_setting,
    randaugment_grid,
    relative_checkpoint,
    unavailable_settings,
)
from micronet_lib.experiments.sweeps import InProcess, RayExecutor, SweepReport, make_executor, run_configs, sweep
from micronet_lib.experiments.released_analyses import (
    CIFAR100_CLASSES,
    CIFAR100_SUPERCLASSES,
    chain_table,
    oneshot_curve,
    orthogonality_table,
    policy_op_counts,
    policy_op_stats,
    sample_hits,
    sample_logits,
    similar_pairs,
    similarity_by_superclass,
    singular_values,
)
from micronet_lib.experiments.studies import (
    STUDIES,
    ablation_grid,
    augment_grid,
    available_settings,
    comparison_seeds,
    dense_configs,
    prune_pairs,
    study_configs,
)

__all__ = [
    "ABLATION_CELLS",
    "ALL_TEST",
    "default_metric",
    "CLAIM_CELLS",
    "CLAIM_PROFILES",
    "ablation_cells",
    "MATCHED_EPSILON_CELL",
    "AblationCell",
    "InProcess",
    "RayExecutor",
    "STUDIES",
    "SweepReport",
    "ablation_grid",
    "augment_grid",
    "available_settings",
    "comparison_seeds",
    "dense_configs",
    "make_executor",
    "prune_pairs",
    "run_configs",
    "study_configs",
    "sweep",
    "CIFAR100_CLASSES",
    "CIFAR100_SUPERCLASSES",
    "ablation_config",
    "augment_config",
    "base_config",
    "cell_intervals",
    "chain_table",
    "comparison_table",
    "curves_frame",
    "dense_config",
    "iterative_config",
    "mean_std",
    "oneshot_config",
    "oneshot_curve",
    "paired",
    "paired_design",
    "orthogonality_table",
    "parse_setting",
    "policy_op_counts",
    "policy_op_stats",
    "randaugment_grid",
    "relative_checkpoint",
    "run_row",
    "runs_frame",
    "sample_hits",
    "sample_logits",
    "similar_pairs",
    "similarity_by_superclass",
    "singular_values",
    "train_all",
    "unavailable_settings",
]
