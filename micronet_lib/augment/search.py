"""Fast AutoAugment's density-matching search (docs/method.md §7.6), on the project's tensor ops.

A fold's model θ was trained on D_M without a policy; a *policy* (``subpolicies`` sub-policies of two
(op, probability, level) each) is scored by applying it to the held-out D_A and evaluating the fixed
θ there: evaluation only, no retraining per trial. Optuna's ``TPESampler`` proposes the policies; the
study of each fold (and search round) lives in an RDB storage (an SQLite file by default), so a killed
search resumes with its finished trials kept. The top ``top`` policies of every study are merged into
the final set, duplicates removed as the authors did.

Faithful defaults (the authors' released search code; named options for the alternatives):

- ``objective="accuracy"``: the reward is D_A top-1 (``"loss"``: minimise the cross-entropy instead);
- ``reduction="best_of_draws"``: every image is augmented ``subpolicies`` times (each draw picks a
  sub-policy uniformly, §7.2) and counts as correct if *any* draw is classified correctly (its loss is the
  smallest of the draws); ``"mean"`` averages over the draws instead;
- ``crop_flip=True``: the augmented D_A images then go through crop + flip, as the authors' loader did.

Trial ``i`` of a study is sampled by a ``TPESampler`` seeded from (seed, study name, i) and sees only
the finished trials before it, so a resumed study proposes exactly what an uninterrupted one would,
and every trial is evaluated on the same augmentation draws (common random numbers: policies are
compared on equal terms).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as nnF

from micronet_lib.augment.fastaa import FastAAStage
from micronet_lib.augment.ops import OPS
from micronet_lib.augment.pipelines import AugmentPipeline, CropFlipStage
from micronet_lib.fileio import atomic_write_text

__all__ = ["OBJECTIVES", "REDUCTIONS", "SEARCH_OPS", "SearchSettings", "suggest_policy", "decode_policy",
           "policy_score", "open_storage", "open_study", "run_study", "top_policies", "remove_duplicates",
           "merge_policies", "study_name", "save_policy", "derive_seed"]

log = logging.getLogger(__name__)

# The paper's operation set: the 15 ops of docs/method.md §7.3.
SEARCH_OPS = tuple(OPS)
OBJECTIVES = ("accuracy", "loss")
REDUCTIONS = ("best_of_draws", "mean")


@dataclass(frozen=True)
class SearchSettings:
    """What a search does. Defaults: the authors' settings (docs/method.md §7.6): K = 5 folds, T = 2 rounds
    of B = 200 trials per fold, top N = 10 policies per round, 5 sub-policies of 2 ops, |D_A| = 40 %."""

    folds: int = 5                     # K stratified shuffle splits of the training set into D_M / D_A
    trials: int = 200                  # B: TPE trials per fold and round
    rounds: int = 2                    # T: independent searches per fold (the paper's search depth)
    top: int = 10                      # N: best policies of each round kept
    subpolicies: int = 5               # N_τ: sub-policies per policy (two ops each)
    da_ratio: float = 0.4              # share of each fold's images held out as D_A
    objective: str = "accuracy"        # "accuracy" (authors) | "loss"
    reduction: str = "best_of_draws"   # "best_of_draws" (authors) | "mean"
    crop_flip: bool = True             # D_A through policy → crop + flip, as the authors' loader
    ops: tuple[str, ...] = SEARCH_OPS  # the operations the search may pick
    seed: int = 0
    fold_epochs: int | None = None     # epochs of each fold model (None: the notebook profile's)
    eval_batch_size: int = 256

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", tuple(self.ops))
        for name in ("folds", "trials", "rounds", "top", "subpolicies", "eval_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"search {name}={value!r} must be a positive integer")
        if self.folds < 2:
            raise ValueError(f"search folds={self.folds} must be at least 2 (K stratified splits of the training set); "
                             "use --folds 2 or more")
        if self.top > self.trials:
            raise ValueError(f"search top={self.top} exceeds trials={self.trials}: a round keeps at most its trials")
        if not 0.0 < self.da_ratio < 1.0:
            raise ValueError(f"search da_ratio={self.da_ratio!r} must lie in (0, 1)")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"search objective={self.objective!r}; allowed: {', '.join(OBJECTIVES)}")
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"search reduction={self.reduction!r}; allowed: {', '.join(REDUCTIONS)}")
        unknown = [op for op in self.ops if op not in OPS]
        if unknown or not self.ops:
            raise ValueError(f"unknown FastAA op(s) {', '.join(map(repr, unknown)) or '(none given)'}; known ops: {', '.join(OPS)}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"search seed={self.seed!r} must be an integer >= 0")
        if self.fold_epochs is not None and (not isinstance(self.fold_epochs, int) or self.fold_epochs < 1):
            raise ValueError(f"search fold_epochs={self.fold_epochs!r} must be a positive integer or None")

    @property
    def direction(self) -> str:
        return "maximize" if self.objective == "accuracy" else "minimize"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ops"] = list(self.ops)
        return data


def derive_seed(*parts: Any) -> int:
    """A 31-bit seed from any parts (sha256 of their text): independent streams per study and trial."""
    text = ":".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:4], "little") & 0x7FFFFFFF


def study_name(fold: int, round_: int) -> str:
    return f"fold{fold}-round{round_}"


# ---------------------------------------------------------------------- the search space
def suggest_policy(trial, settings: SearchSettings) -> list[tuple[tuple[str, float, float], ...]]:
    """One policy from an Optuna trial: per sub-policy i and slot j, an op (categorical), p and level in [0, 1]."""
    return [tuple((trial.suggest_categorical(f"op_{i}_{j}", list(settings.ops)),
                   trial.suggest_float(f"prob_{i}_{j}", 0.0, 1.0),
                   trial.suggest_float(f"level_{i}_{j}", 0.0, 1.0)) for j in range(2))
            for i in range(settings.subpolicies)]


def decode_policy(params: dict[str, Any], subpolicies: int) -> list[tuple[tuple[str, float, float], ...]]:
    """The policy of a finished trial from its parameters (inverse of ``suggest_policy``)."""
    return [tuple((params[f"op_{i}_{j}"], float(params[f"prob_{i}_{j}"]), float(params[f"level_{i}_{j}"]))
                  for j in range(2)) for i in range(subpolicies)]


# ---------------------------------------------------------------------- one trial's evaluation
def policy_score(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, policy: Sequence, *,
                 mean: Sequence[float], std: Sequence[float], settings: SearchSettings, seed: int,
                 device: str | torch.device = "cpu") -> dict[str, float]:
    """D_A top-1 (%) and loss of the fixed ``model`` on ``images`` (uint8 [N, 3, H, W]) augmented by ``policy``.

    ``settings.subpolicies`` draws per image, reduced per ``settings.reduction`` (module docstring); the
    draws come from a generator seeded with ``seed``. ``model`` is evaluated as given (eval mode, no grad).
    """
    stages = [FastAAStage(policy, name="trial")] + ([CropFlipStage()] if settings.crop_flip else [])
    pipeline = AugmentPipeline("search trial", [stages], mean=mean, std=std)
    gen = torch.Generator().manual_seed(int(seed))
    device = torch.device(device)
    model.eval()
    correct, losses = [], []
    with torch.no_grad():
        for _ in range(settings.subpolicies):
            hits, loss = [], []
            for chunk in torch.arange(len(images)).split(settings.eval_batch_size):
                x = pipeline(images[chunk], generator=gen).to(device)
                y = labels[chunk].to(device)
                logits = model(x).float()
                hits.append((logits.argmax(dim=1) == y).cpu())
                loss.append(nnF.cross_entropy(logits, y, reduction="none").cpu())
            correct.append(torch.cat(hits))
            losses.append(torch.cat(loss))
    correct_t, loss_t = torch.stack(correct).float(), torch.stack(losses)
    if settings.reduction == "best_of_draws":
        per_image_hit, per_image_loss = correct_t.max(dim=0).values, loss_t.min(dim=0).values
    else:
        per_image_hit, per_image_loss = correct_t.mean(dim=0), loss_t.mean(dim=0)
    return dict(top1=100.0 * float(per_image_hit.mean()), loss=float(per_image_loss.mean()))


# ---------------------------------------------------------------------- storage and studies
def _optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own bar reports the trials
    return optuna


def open_storage(url: str):
    """An Optuna RDB storage at SQLAlchemy ``url`` (``sqlite:///path.db`` makes the file); one clear error if not."""
    optuna = _optuna()
    if not isinstance(url, str) or "://" not in url:
        raise ValueError(f"storage {url!r} is not a SQLAlchemy URL; give e.g. sqlite:///search.db or "
                         "postgresql://user@host/db")
    if url.startswith("sqlite:///"):
        folder = Path(url[len("sqlite:///"):]).expanduser().parent
        if not folder.is_dir():
            raise ValueError(f"storage {url}: folder {folder} does not exist; create it or give another path")
    # sqlite: wait for a lock held by another fold's writer rather than fail at once
    kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    except Exception as exc:  # noqa: BLE001 - any driver or connection failure is the user's URL
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"storage {url} cannot be opened ({first}); give a writable sqlite:///path.db "
                         "or a reachable SQLAlchemy database URL") from None


def open_study(storage, name: str, settings: SearchSettings):
    optuna = _optuna()
    return optuna.create_study(storage=storage, study_name=name, direction=settings.direction, load_if_exists=True)


def run_study(study, objective: Callable[[list], float], settings: SearchSettings, *, progress: bool = True,
              label: str | None = None) -> int:
    """Run the study until it holds ``settings.trials`` finished trials; returns how many ran now.

    Trials left RUNNING by a killed process are marked FAIL first (one driver per study: the fold's task),
    then trial i is sampled by TPE seeded from (seed, study, i) over the i finished trials before it.
    """
    optuna = _optuna()
    from tqdm.auto import tqdm

    TrialState = optuna.trial.TrialState
    for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        log.info("%s: trial %d was left running by a stopped search; marked failed", study.study_name, stale.number)
        study.tell(stale.number, state=TrialState.FAIL, skip_if_finished=True)
    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    ran = 0
    bar = tqdm(total=settings.trials, initial=min(done, settings.trials), desc=label or study.study_name,
               unit="trial", disable=not progress, dynamic_ncols=True, leave=False)
    try:
        while done < settings.trials:
            study.sampler = optuna.samplers.TPESampler(seed=derive_seed(settings.seed, study.study_name, done),
                                                       constant_liar=False, n_startup_trials=min(10, max(2, settings.trials // 5)))
            trial = study.ask()
            value = float(objective(suggest_policy(trial, settings)))
            study.tell(trial, value)
            done, ran = done + 1, ran + 1
            bar.update(1)
            bar.set_postfix(best=f"{study.best_value:.4g}")
    finally:
        bar.close()
    return ran


def top_policies(study, n: int) -> list[tuple[float, list]]:
    """(value, policy) of the ``n`` best finished trials, best first (ties: the earlier trial first)."""
    optuna = _optuna()
    trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    ranked = sorted(trials, key=lambda t: (sign * t.value, t.number))[:n]
    subs = sum(1 for k in (ranked[0].params if ranked else {}) if k.startswith("op_")) // 2
    return [(float(t.value), decode_policy(t.params, subs)) for t in ranked]


def remove_duplicates(policy: Sequence) -> list:
    """Within one policy, drop a sub-policy whose op names repeat an earlier one's (the authors' merge)."""
    seen, out = set(), []
    for sub in policy:
        key = tuple(op[0] for op in sub)
        if key not in seen:
            seen.add(key)
            out.append(sub)
    return out


def merge_policies(policies: Sequence[Sequence]) -> list[list[list]]:
    """The final set: every kept policy's sub-policies, duplicates within a policy removed, in order,
    in the released format (a list of [[op, p, level], [op, p, level]])."""
    return [[[op, float(p), float(level)] for op, p, level in sub] for pol in policies for sub in remove_duplicates(pol)]


def save_policy(subpolicies: list, folder: str | os.PathLike, *, set_name: str,
                extra: dict[str, Any] | None = None) -> Path:
    """Write ``{set_name: [...]}`` (the released JSON format, ``assets.load_policies(path)`` reads it) as
    ``policy-<sha12 of the content>.json`` in ``folder``, atomically; a sidecar ``.meta.json`` holds ``extra``.

    The content hash in the name means a config naming ``fastaa:<that path>`` names exactly this policy.
    """
    text = json.dumps({set_name: subpolicies}, indent=1) + "\n"
    sha = hashlib.sha256(text.encode()).hexdigest()[:12]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"policy-{sha}.json"
    atomic_write_text(path, text)
    if extra is not None:
        atomic_write_text(path.with_suffix(".meta.json"), json.dumps(extra, indent=1, sort_keys=True) + "\n")
    return path

