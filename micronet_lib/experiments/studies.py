"""The training grid of each study (notebooks 02–04) as a list of ``TrainConfig``s (issue #15).

The notebooks and ``micronet sweep`` build their configs through these functions, so a sweep trains
exactly the runs a notebook later finds with ``run_or_load`` (same config, same hash, same folder).

- ``ablation_grid`` (02): every cell of the profile (the claim cells, or the {CE, LS, WLS} × {ortho off, on}
  grid) for every seed of ``seeds``.
- ``augment_grid`` (03): settings × the first ``comparison_seeds`` seeds; the comparison uses
  ``available_settings`` (the profile's pipelines that can run here), the search ``randaugment_grid``.
- ``dense_configs`` / ``prune_pairs`` (04): the dense start models, then per dense run the
  (iterative, one-shot) pair whose ``init_from`` is that run's ``best.pt``. The pair depends on the
  dense run's folder, so ``study_configs("04", ...)`` lists it only once the dense run is finished.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from micronet_lib.experiments.configs import (
    AblationCell,
    ablation_cells,
    ablation_config,
    augment_config,
    dense_config,
    iterative_config,
    oneshot_config,
    randaugment_grid,
    relative_checkpoint,
    unavailable_settings,
)
from micronet_lib.train.config import TrainConfig

__all__ = ["STUDIES", "ablation_grid", "augment_grid", "available_settings", "comparison_seeds", "dense_configs",
           "prune_pairs", "study_configs", "parse_studies"]

# Notebook number → what its training grid is (the sweep's --study choices).
STUDIES = {"02": "regulariser ablation", "03": "augmentation comparison + RandAugment search",
           "04": "dense → iterative / one-shot pruning"}


def comparison_seeds(params: Mapping[str, Any]) -> list[int]:
    """The seeds of the 03 and 04 training runs: the first ``comparison_seeds`` of ``seeds``."""
    return list(params["seeds"][: params["comparison_seeds"]])


def ablation_grid(params: Mapping[str, Any]) -> list[tuple[AblationCell, int]]:
    """(cell, seed) of every 02 ablation run, cell-major (the table's row order): the profile's cells
    (``configs.ablation_cells``)."""
    return [(cell, seed) for cell in ablation_cells(params) for seed in params["seeds"]]


def available_settings(params: Mapping[str, Any]) -> list[str]:
    """The profile's augmentation settings that can run here (``unavailable_settings`` says why not)."""
    missing = unavailable_settings(params["augment_pipelines"])
    return [s for s in params["augment_pipelines"] if s not in missing]


def augment_grid(params: Mapping[str, Any], settings: Sequence[str]) -> list[tuple[str, int]]:
    """(setting, seed) of every 03 run over ``settings``, setting-major."""
    return [(s, seed) for s in settings for seed in comparison_seeds(params)]


def dense_configs(params: Mapping[str, Any]) -> list[TrainConfig]:
    """The dense models 04 prunes, one per comparison seed."""
    return [dense_config(params, seed=s) for s in comparison_seeds(params)]


def prune_pairs(params: Mapping[str, Any], dense: Sequence[Mapping[str, Any]]) -> list[tuple[TrainConfig, TrainConfig]]:
    """(iterative, one-shot) configs starting from each finished dense run's ``best.pt``.

    ``init_from`` is ``run:<dense run id>/best.pt`` (``relative_checkpoint``), resolved against the run
    store when the run trains, so a config built here equals the one notebook 04 builds, wherever either runs.
    """
    pairs = []
    for d, seed in zip(dense, comparison_seeds(params)):
        init = relative_checkpoint(d)
        pairs.append((iterative_config(params, init, seed=seed), oneshot_config(params, init, seed=seed)))
    return pairs


def study_configs(study: str, params: Mapping[str, Any], *,
                  finished: Mapping[str, Mapping[str, Any]] | None = None) -> list[TrainConfig]:
    """Every config of ``study`` ("02", "03" or "04") that can be built now, in notebook order.

    ``finished`` maps config hashes to summaries of finished runs: 04's pruning runs are listed once
    all its dense runs are in it (their ``init_from`` is a dense run's checkpoint). Shared cells
    (02's CE + ortho = 03's baseline+cutmix = 04's dense) appear in each study; callers dedupe by hash.
    """
    if study == "02":
        return [ablation_config(params, cell, seed=seed) for cell, seed in ablation_grid(params)]
    if study == "03":
        settings = augment_grid(params, available_settings(params)) + augment_grid(params, randaugment_grid(params))
        return [augment_config(params, s, seed=seed) for s, seed in settings]
    if study == "04":
        dense = dense_configs(params)
        done = [(finished or {}).get(c.config_hash()) for c in dense]
        if any(d is None for d in done):
            return dense
        return dense + [c for pair in prune_pairs(params, done) for c in pair]
    raise ValueError(f"unknown study {study!r}; allowed: {', '.join(STUDIES)} (or 'all')")


def parse_studies(text: str) -> list[str]:
    """``"all"`` → every study; ``"02,04"`` → those (each checked)."""
    if text == "all":
        return list(STUDIES)
    wanted = [s.strip().zfill(2) for s in text.split(",") if s.strip()]
    bad = [s for s in wanted if s not in STUDIES]
    if bad or not wanted:
        raise ValueError(f"--study {text!r}: allowed: {', '.join(STUDIES)}, a comma list of them, or 'all'")
    return wanted
