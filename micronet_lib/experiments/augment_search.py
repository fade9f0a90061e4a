"""The augmentation search end to end (issue #29, docs/method.md §7.6): fold models in the run store,
one TPE study per fold and round in an Optuna storage, folds in process or as Ray tasks, the merged policy.

- ``search_settings(profile, **overrides)``: the profile's search budget (``SEARCH_PROFILES``, each value
  that differs from the authors' with its reason) as a ``SearchSettings``.
- ``fold_configs(params, settings)``: fold k's model is an ordinary training run (``TrainConfig``; trained
  or read back by ``run_or_load``, so a killed search never retrains a finished fold model): the notebook
  profile's budget, no policy and no mixing, its validation split = D_A (``da_ratio`` of the fold's
  images, stratified, seeded per fold), selection on the last epoch so D_A stays untouched, and an
  explicit execution mode (fp32, contiguous where the profile says "auto": no stopwatch decides a value).
- ``search_augment(params, settings, executor=...)``: every fold (train or read its model, then its
  studies) in this process or as one Ray task per fold (``experiments.sweeps``' Ray pattern), then
  the top ``top`` policies of every study merged into ``policy-<sha>.json`` in the search folder.

A search folder is ``<run store>/search/<search id>/`` (the id hashes the settings and the fold
configs); it holds ``search.db`` (the default storage), ``search.json`` and the policy file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from micronet_lib.devices import resolve_device
from micronet_lib.augment.search import (
    SearchSettings,
    derive_seed,
    merge_policies,
    open_storage,
    open_study,
    policy_score,
    run_study,
    save_policy,
    study_name,
    top_policies,
)
from micronet_lib.experiments.configs import base_config
from micronet_lib.experiments.sweeps import InProcess, RayExecutor, run_store_at
from micronet_lib.fileio import atomic_write_json
from micronet_lib.train.config import TrainConfig
from micronet_lib.accel import execution
from micronet_lib.data import load_dataset
from micronet_lib.evaluate import inference_copy
from micronet_lib.models.checkpoints import load_into
from micronet_lib.train import runs
from micronet_lib.train.engine import run_or_load
from micronet_lib.train.runs import run_dir_for, runs_root
from micronet_lib.train.setup import build_training_model, prepare_data

__all__ = ["SEARCH_PROFILES", "SearchResult", "estimate_cost", "H200_TRAIN_IMG_S", "H200_EVAL_IMG_S", "search_settings", "fold_configs", "search_id", "search_folder",
           "default_storage", "search_fold", "search_augment", "check_search_inputs"]

log = logging.getLogger(__name__)

_CPU = ("the cpu profile's budget, sized for the whole search (fold models included) to fit 30 minutes on 2 free cores "
        "(issue #29); the wall time is measured with `micronet search-augment --profile cpu`")
# Per profile: values that differ from SearchSettings' defaults (the authors'), and why.
SEARCH_PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {
        "values": dict(fold_epochs=200),
        "reasons": {"fold_epochs": "Fast AutoAugment's WRN-40-2 CIFAR configuration trains each fold model 200 epochs "
                                   "(docs/method.md §7.6); MicroNet's own 4 × 150-epoch recipe is for the final model"},
    },
    "cpu": {
        "values": dict(folds=3, trials=40, rounds=1, top=5, fold_epochs=5),
        "reasons": {"folds": _CPU, "trials": _CPU, "rounds": _CPU, "top": _CPU + " (top 5 of 40 trials)",
                    "fold_epochs": _CPU + " (5 epochs per fold model; the profile's own runs take 16)"},
    },
    "smoke": {
        "values": dict(folds=2, trials=6, rounds=1, top=2, subpolicies=3, fold_epochs=1),
        "reasons": {k: "smoke test: every step of the search on a tiny budget (target: 2 minutes on 2 free cores)"
                    for k in ("folds", "trials", "rounds", "top", "subpolicies", "fold_epochs")},
    },
}


# Measured on one NVIDIA H200 (README "GPU check", 2026-11-28; ver2, batch 128 / 256, fp32, eager): a training
# step 69 ms (≈ 1,855 img/s) and evaluation 34,815 img/s. The basis of ``estimate_cost``.
H200_TRAIN_IMG_S = 128 / 0.069
H200_EVAL_IMG_S = 34_815.0


def estimate_cost(settings: SearchSettings, *, images_per_class: int = 500, classes: int = 100,
                  train_img_s: float = H200_TRAIN_IMG_S, eval_img_s: float = H200_EVAL_IMG_S) -> dict[str, float]:
    """GPU-hours of a search from measured throughputs (default: the H200's; CIFAR-100's 500 × 100 images).

    An estimate: fold models = folds × fold_epochs × |D_M| training images, trials = folds × rounds ×
    trials × |D_A| × subpolicies evaluated images; data loading, the CPU augmentation of the trials and
    start-up are not counted.
    """
    if settings.fold_epochs is None:
        raise ValueError("estimate_cost needs settings.fold_epochs (the fold models' epochs)")
    d_a = round(settings.da_ratio * images_per_class) * classes
    d_m = images_per_class * classes - d_a
    train = settings.folds * settings.fold_epochs * d_m
    evaluated = settings.folds * settings.rounds * settings.trials * d_a * settings.subpolicies
    fold_h, trial_h = train / train_img_s / 3600, evaluated / eval_img_s / 3600
    return dict(d_m=d_m, d_a=d_a, fold_train_images=train, trial_eval_images=evaluated, fold_model_gpu_hours=fold_h,
                trial_gpu_hours=trial_h, total_gpu_hours=fold_h + trial_h)


def search_settings(profile: str, **overrides: Any) -> SearchSettings:
    """The search settings of ``profile`` with ``overrides`` (``None`` values are ignored) applied."""
    if profile not in SEARCH_PROFILES:
        raise ValueError(f"unknown profile {profile!r} for the augmentation search; allowed: {', '.join(SEARCH_PROFILES)}")
    values = dict(SEARCH_PROFILES[profile]["values"])
    values.update({k: v for k, v in overrides.items() if v is not None})
    return SearchSettings(**values)


def _pool_per_class(params: Mapping[str, Any]) -> int:
    """Training images per class the folds split (train + val of the notebook budget; all of them if None)."""
    if params["train_per_class"] is not None:
        return int(params["train_per_class"]) + int(params["val_per_class"] or 0)

    labels = load_dataset(params["data"], seed=0).train.labels
    return int(labels.bincount().min())


def fold_configs(params: Mapping[str, Any], settings: SearchSettings) -> list[TrainConfig]:
    """The model of each fold (module docstring): seed 1000·seed + k picks its split and its init."""
    pool = _pool_per_class(params)
    held_out = max(1, round(settings.da_ratio * pool))
    if held_out >= pool:
        raise ValueError(f"{pool} training image(s) per class leave none for D_M at da_ratio={settings.da_ratio}; "
                         "raise train_per_class or lower da_ratio")
    overrides: dict[str, Any] = dict(augment="baseline", mix="none", train_per_class=pool - held_out,
                                     val_per_class=held_out, select_on="last")
    if settings.fold_epochs is not None:
        overrides.update(cycles=1, epochs_per_cycle=settings.fold_epochs)
    configs = [base_config(params, seed=1000 * settings.seed + k, **overrides) for k in range(settings.folds)]
    # A mode chosen by timing ("auto") would make the fold models, and with them every trial value, depend on
    # the machine's load: a search names its mode (fp32, contiguous; the trials are evaluated in it too).
    return [c.replace(precision="fp32" if c.precision == "auto" else c.precision,
                      memory_format="contiguous" if c.memory_format == "auto" else c.memory_format) for c in configs]


def search_id(settings: SearchSettings, configs: list[TrainConfig]) -> str:
    """12 hex digits naming a search: its settings (not the evaluation batch) and its fold models."""
    data = {k: v for k, v in settings.to_dict().items() if k != "eval_batch_size"}
    data["fold_models"] = [c.config_hash() for c in configs]
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def search_folder(runs_dir: str | os.PathLike, sid: str) -> Path:
    return Path(runs_dir) / "search" / sid


def default_storage(folder: str | os.PathLike) -> str:
    return f"sqlite:///{Path(folder).resolve() / 'search.db'}"


def check_search_inputs(settings: SearchSettings, storage: str) -> None:
    """Fail before any work: the settings were validated when built; here the storage must open."""
    open_storage(storage).remove_session()


# ---------------------------------------------------------------------- one fold
def _fold_model(config: TrainConfig, run_dir: Path, num_classes: int):
    """The fold model's evaluated weights (``best.pt``: BN statistics as its last evaluation used them),
    as an eval-mode inference copy, and its device."""
    model = build_training_model(config.replace(init_from=None), num_classes)
    load_into(model, runs.load_checkpoint(run_dir / runs.BEST)["model"], source=str(run_dir / runs.BEST))
    device = torch.device(resolve_device(config.device))
    work, _ = inference_copy(model, execution.ExecutionMode("fp32", "contiguous"), device)
    return work.eval(), device


def search_fold(config: TrainConfig, settings: SearchSettings, fold: int, storage: str, sid: str, *,
                runs_dir: str | os.PathLike, progress: bool = False) -> dict[str, Any]:
    """Train (or read back) fold ``fold``'s model, then run its ``rounds`` studies to ``trials`` trials each."""
    summary = run_or_load(config, runs_dir=runs_dir, progress=progress)
    ds = prepare_data(config)
    images, labels = ds.val.images, ds.val.labels
    loaded: dict[str, Any] = {}

    def fold_model():
        # Loaded when a trial runs, not before: a finished search read back from a committed set (whose
        # checkpoints are not committed) re-renders without the fold models' weights.
        if not loaded:
            loaded["model"], loaded["device"] = _fold_model(config, run_dir_for(config, runs_dir), ds.num_classes)
        return loaded["model"], loaded["device"]
    store = open_storage(storage)
    out = dict(fold=fold, run_id=summary["run_id"], d_a=len(labels), d_m=len(ds.train), trials_run=0, best={})
    for r in range(settings.rounds):
        name = f"{sid}/{study_name(fold, r)}"
        eval_seed = derive_seed("draws", settings.seed, sid, fold)  # one set of draws per fold: trials compared on equal terms

        def objective(policy, _seed=eval_seed):
            model, device = fold_model()
            score = policy_score(model, images, labels, policy, mean=ds.mean, std=ds.std, settings=settings,
                                 seed=_seed, device=device)
            return score["top1"] if settings.objective == "accuracy" else score["loss"]

        study = open_study(store, name, settings)
        out["trials_run"] += run_study(study, objective, settings, progress=progress,
                                       label=f"fold {fold + 1}/{settings.folds} round {r + 1}")
        out["best"][name] = study.best_value
    store.remove_session()
    return out


def _fold_in_worker(config: dict, settings: dict, fold: int, storage: str, sid: str, runs_dir: str,
                    workdir: str | None, threads: int) -> dict[str, Any]:
    """The body of one Ray task: a whole fold in the worker, on the shared run store and storage."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    with run_store_at(runs_dir, workdir):
        return search_fold(TrainConfig.from_dict(config), SearchSettings(**settings), fold, storage, sid,
                           runs_dir=runs_dir, progress=False)


# ---------------------------------------------------------------------- the whole search
@dataclass
class SearchResult:
    """What a search produced: where it lives, every fold's record, the kept policies and the merged file."""

    settings: SearchSettings
    search_id: str
    folder: Path
    storage: str
    folds: list[dict[str, Any]] = field(default_factory=list)
    kept: list[dict[str, Any]] = field(default_factory=list)   # fold, round, rank, value, policy
    policy_path: Path | None = None

    @property
    def policy(self) -> list:
        return [sub for row in self.kept for sub in merge_policies([row["policy"]])]


def _run_folds(executor, configs, settings, storage, sid, runs_dir, workdir, progress, echo):
    if executor is None or isinstance(executor, InProcess):
        for k, c in enumerate(configs):
            with run_store_at(runs_dir, workdir):
                yield search_fold(c, settings, k, storage, sid, runs_dir=runs_dir, progress=progress)
        return
    if not isinstance(executor, RayExecutor):
        raise ValueError(f"executor {executor!r}: the search runs in process or on Ray (make_executor('ray[:ADDRESS]'))")
    ray = executor._connect()
    task = ray.remote(_fold_in_worker)
    refs = [task.options(name=f"search fold {k} {sid}", num_cpus=executor.cpus_per_run, max_retries=executor.max_retries,
                         retry_exceptions=False).remote(c.to_dict(), settings.to_dict(), k, storage, sid, str(runs_dir),
                                                        None if workdir is None else str(workdir), executor.cpus_per_run)
            for k, c in enumerate(configs)]
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        for ref in done:
            yield ray.get(ref)  # a fold's own exception propagates: the search cannot merge without it


def search_augment(params: Mapping[str, Any], settings: SearchSettings, *, executor=None, storage: str | None = None,
                   runs_dir: str | os.PathLike | None = None, workdir: str | os.PathLike | None = None,
                   progress: bool = True, echo: Callable[[str], None] | None = None) -> SearchResult:
    """Run (or resume) the search under notebook ``params``; returns the ``SearchResult`` (module docstring)."""
    echo = echo or log.info
    root = runs_root(runs_dir).resolve()
    configs = fold_configs(params, settings)
    sid = search_id(settings, configs)
    folder = search_folder(root, sid)
    folder.mkdir(parents=True, exist_ok=True)
    storage = storage or default_storage(folder)
    check_search_inputs(settings, storage)
    echo(f"search {sid}: {settings.folds} folds × {settings.rounds} round(s) × {settings.trials} trials, "
         f"top {settings.top} kept per round; storage {storage}")
    result = SearchResult(settings, sid, folder, storage)
    for record in _run_folds(executor, configs, settings, storage, sid, root, workdir, progress, echo):
        echo(f"fold {record['fold'] + 1}: model {record['run_id']} (D_M {record['d_m']}, D_A {record['d_a']} images), "
             f"{record['trials_run']} trial(s) run now, best " + ", ".join(f"{v:.4g}" for v in record["best"].values()))
        result.folds.append(record)
    result.folds.sort(key=lambda r: r["fold"])
    store = open_storage(storage)
    for k in range(settings.folds):
        for r in range(settings.rounds):
            study = open_study(store, f"{sid}/{study_name(k, r)}", settings)
            for rank, (value, policy) in enumerate(top_policies(study, settings.top)):
                result.kept.append(dict(fold=k, round=r, rank=rank, value=value, policy=policy))
    store.remove_session()
    meta = dict(search_id=sid, settings=settings.to_dict(), fold_runs=[r["run_id"] for r in result.folds],
                profile=params["profile"], data=params["data"], storage=storage if storage != default_storage(folder) else "search.db")
    result.policy_path = save_policy(result.policy, folder, set_name=f"searched_{params['profile']}_{sid}", extra=meta)
    atomic_write_json(folder / "search.json", dict(meta, policy=result.policy_path.name, kept=result.kept))
    echo(f"search {sid}: {len(result.policy)} sub-policies in {result.policy_path}")
    return result
