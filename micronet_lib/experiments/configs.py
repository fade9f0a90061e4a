"""``TrainConfig`` of every cell of the companion's studies, from the notebook parameters (issue #8).

Each study starts from the training profile of the notebook profile's name
(``TrainConfig.from_profile``) and applies the notebook's budget (data, model, width, subset sizes,
batch, epochs, seed), so a cell's config -- and with it its run folder ``results/runs/<hash>/`` -- is a
pure function of the parameters: re-rendering a notebook finds every run already trained
(``train.run_or_load``), and two studies asking for the same cell share one run (the ablation's
"CE + orthogonality" cell is the augmentation study's ``baseline+cutmix`` and the pruning study's
dense model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from micronet_lib.train.config import PROFILES as TRAIN_PROFILES
from micronet_lib.train.config import TrainConfig
from micronet_lib.train.profiles import profile_execution
from micronet_lib.assets import AssetUnavailableError, load_policies
from micronet_lib.augment.pipelines import PIPELINES
from micronet_lib.train.setup import RUN_REF

__all__ = [
    "AblationCell",
    "ABLATION_CELLS",
    "CLAIM_CELLS",
    "CLAIM_PROFILES",
    "ablation_cells",
    "MATCHED_EPSILON_CELL",
    "MIXES",
    "base_config",
    "ablation_config",
    "parse_setting",
    "augment_config",
    "unavailable_settings",
    "randaugment_grid",
    "dense_config",
    "iterative_config",
    "oneshot_config",
    "relative_checkpoint",
]

# Ortho coefficient of the "on" cells: the authors' 0.7 on the mean over the 1×1 layers (docs/method.md §6.1).
_ORTHO_ON = 0.7


@dataclass(frozen=True)
class AblationCell:
    """One cell of {CE, uniform LS, weighted LS} × {orthogonality off, on} (docs/method.md §6.1–§6.3)."""

    loss: str
    ortho: bool
    epsilon: float | None = None  # None: the loss's own default (LS 0.1, WLS 0.3 in pretraining)

    def __post_init__(self) -> None:
        if self.loss not in ("ce", "ls", "wls"):
            raise ValueError(f"AblationCell.loss={self.loss!r}; allowed: 'ce', 'ls', 'wls'")
        if not isinstance(self.ortho, bool):
            raise ValueError(f"AblationCell.ortho={self.ortho!r} must be True or False")
        if self.epsilon is not None and (self.loss == "ce" or not 0 < self.epsilon < 1):
            raise ValueError(f"AblationCell.epsilon={self.epsilon!r}: only LS/WLS cells take an ε in (0, 1)")

    @property
    def label(self) -> str:
        names = {"ce": "CE", "ls": "uniform LS", "wls": "weighted LS"}
        eps = f" (ε {self.epsilon:g})" if self.epsilon is not None else ""
        return f"{names[self.loss]}{eps}{' + ortho' if self.ortho else ''}"


# Uniform LS at weighted LS's pretraining ε (0.3), orthogonality on: the matched-ε partner of "weighted LS +
# ortho", so the loss comparison is not confounded by the two losses' different default ε (issue #11).
MATCHED_EPSILON_CELL = AblationCell("ls", True, epsilon=0.3)
# The 3 × 2 grid {CE, LS, WLS} × {ortho off, on}, then the matched-ε cell.
ABLATION_CELLS = (*(AblationCell(loss, ortho) for loss in ("ce", "ls", "wls") for ortho in (False, True)),
                  MATCHED_EPSILON_CELL)
# The cells that test a claim (issue #28): CE vs CE + ortho (ortho_helps), weighted LS + ortho vs uniform LS
# at the same ε + ortho (wls_beats_ls). The decisive profiles train only these; smoke and paper the whole grid.
CLAIM_CELLS = (AblationCell("ce", False), AblationCell("ce", True), AblationCell("wls", True), MATCHED_EPSILON_CELL)
CLAIM_PROFILES = ("cpu", "gpu")

def ablation_cells(params: Mapping[str, Any]) -> tuple[AblationCell, ...]:
    """The 02 cells a profile trains: only ``CLAIM_CELLS`` under a decisive study profile (``CLAIM_PROFILES``),
    the whole 3 × 2 grid plus the matched-ε cell otherwise."""
    return CLAIM_CELLS if params["profile"] in CLAIM_PROFILES else ABLATION_CELLS


# Batch-level mixing a setting may add to a pipeline ("<pipeline>+cutmix"), docs/method.md §6.4.
MIXES = ("cutmix", "mixup")


def _profile_values(profile: str) -> dict[str, Any]:
    if profile not in TRAIN_PROFILES:
        raise ValueError(f"profile={profile!r} has no training profile; allowed: {', '.join(sorted(TRAIN_PROFILES))}")
    return dict(TRAIN_PROFILES[profile]["values"])


def _default(profile: str, field: str) -> Any:
    values = _profile_values(profile)
    return values[field] if field in values else TrainConfig.__dataclass_fields__[field].default


def base_config(params: Mapping[str, Any], *, seed: int, **overrides: Any) -> TrainConfig:
    """The training profile ``params["profile"]`` with the notebook budget and ``overrides`` applied.

    From ``params`` (``pipeline.check_params`` output): data, model, width_mult, train/val/test
    images per class, batch size, device, ``bn_recal_images`` (caps the BN re-estimation of profiles
    that do it before every evaluation; the paper profile does not), and ``epochs`` (one cosine cycle of that many epochs; None
    keeps the profile's cycles × epochs). ``val_per_class=0`` means no validation split, so a profile
    that selects on validation selects on the test set instead (docs/method.md §5.7, the authors' choice).
    """
    profile = params["profile"]
    val = params["val_per_class"] or None
    values: dict[str, Any] = dict(
        seed=int(seed),
        dataset=params["data"],
        model=params["model"],
        width_mult=float(params["width_mult"]),
        train_per_class=params["train_per_class"],
        val_per_class=val,
        test_per_class=params["test_per_class"],
        batch_size=params["batch_size"],
        device=params["device"],
    )
    if params["epochs"] is not None:
        values.update(cycles=1, epochs_per_cycle=params["epochs"])
    if val is None and _default(profile, "select_on") == "val":
        values["select_on"] = "test"
    # The execution mode is the profile's named one (or the documented override), never a stopwatch's pick.
    mode = profile_execution(profile, params["device"])
    values.update(precision=mode["precision"], memory_format=mode["memory_format"])
    recal = _default(profile, "bn_recalibrate_images")
    if recal:  # short-budget profiles re-estimate BN before each evaluation; the notebook budget caps it
        values["bn_recalibrate_images"] = min(recal, params["bn_recal_images"])
    values.update(overrides)
    return TrainConfig.from_profile(profile, **values)


def ablation_config(params: Mapping[str, Any], cell: AblationCell, *, seed: int) -> TrainConfig:
    """One ablation cell: the loss with its default ε (LS 0.1, WLS 0.3 in pretraining, docs/method.md §6.2–§6.3)
    and orthogonality 0.7 or 0; everything else (CutMix included) as the profile has it."""
    if not isinstance(cell, AblationCell):
        raise ValueError(f"cell must be an AblationCell, got {cell!r}")
    return base_config(params, seed=seed, loss=cell.loss, epsilon=cell.epsilon,
                       ortho_coef=_ORTHO_ON if cell.ortho else 0.0)


def parse_setting(name: str) -> tuple[str, str]:
    """``"<pipeline>[+cutmix|+mixup]"`` → ``(augment pipeline, mix)``, e.g. ``"fastaa+cutmix"`` →
    ``("fastaa", "cutmix")``, ``"cutout"`` → ``("cutout", "none")``.

    The pipeline is any ``augment.build_pipeline`` name (``randaugment:N:M`` included); a bad name
    raises ``ValueError`` listing the known pipelines. Bare ``randaugment`` is its default
    ``randaugment:2:9``, so the comparison and the grid share that run.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"augmentation setting {name!r} must be a non-empty string like 'baseline' or 'fastaa+cutmix'")
    base, plus, mix = name.partition("+")
    if plus and mix not in MIXES:
        raise ValueError(f"augmentation setting {name!r}: '+{mix}' is not a mixing; allowed: +{', +'.join(MIXES)}")

    if base.split(":")[0] not in PIPELINES:
        raise ValueError(f"augmentation setting {name!r}: {PIPELINES.unknown_message(base.split(':')[0])}")
    if base == "randaugment":
        base = "randaugment:2:9"
    return base, (mix if plus else "none")


def augment_config(params: Mapping[str, Any], setting: str, *, seed: int) -> TrainConfig:
    """One augmentation setting on top of the profile's recipe (its loss and orthogonality kept);
    mixing only where the setting names it, so ``baseline`` is crop + flip alone (docs/method.md §5.1, §7)."""
    augment, mix = parse_setting(setting)
    return base_config(params, seed=seed, augment=augment, mix=mix)


def unavailable_settings(settings: list[str]) -> dict[str, str]:
    """Settings that cannot run here, with the reason: the FastAA ones when the policy asset is missing
    (``assets.load_policies``); the notebook says so and runs the others."""
    needs_policy = [s for s in settings if parse_setting(s)[0].split(":")[0] in ("fastaa", "fastaa4x")]
    if not needs_policy:
        return {}
    try:
        load_policies()
    except AssetUnavailableError as exc:
        return {s: f"Fast-AutoAugment policy file unavailable ({str(exc).split('. ')[0]})" for s in needs_policy}
    return {}


def randaugment_grid(params: Mapping[str, Any]) -> list[str]:
    """The settings of the RandAugment N × M search (no mixing), in grid order."""
    return [f"randaugment:{n}:{m}" for n in params["randaugment_n"] for m in params["randaugment_m"]]


def dense_config(params: Mapping[str, Any], *, seed: int) -> TrainConfig:
    """The dense model the pruning study starts from: the profile's recipe (CE + orthogonality), i.e. the
    ablation's "CE + ortho" cell, so it is trained once for both notebooks."""
    return ablation_config(params, AblationCell("ce", True), seed=seed)


def _prune_epochs(params: Mapping[str, Any]) -> int:
    return params["prune_epochs"] or _default(params["profile"], "epochs_per_cycle")


def iterative_config(params: Mapping[str, Any], init_from: str, *, seed: int) -> TrainConfig:
    """The authors' schedule (docs/method.md §8.3–§8.4): one cycle per rate of ``params["prune_rates"]``,
    each ``prune_epochs`` long, masks nested, starting from ``init_from``."""
    rates = tuple(float(r) for r in params["prune_rates"])
    return ablation_config(params, AblationCell("ce", True), seed=seed).replace(
        init_from=init_from, prune_rates=rates, cycles=len(rates), epochs_per_cycle=_prune_epochs(params))


def oneshot_config(params: Mapping[str, Any], init_from: str, *, seed: int) -> TrainConfig:
    """The control: prune once to the schedule's final rate, then fine-tune for the same total number
    of epochs as the iterative run, in one cosine cycle."""
    rates = tuple(float(r) for r in params["prune_rates"])
    return ablation_config(params, AblationCell("ce", True), seed=seed).replace(
        init_from=init_from, prune_rates=(rates[-1],), cycles=1, epochs_per_cycle=_prune_epochs(params) * len(rates))


def relative_checkpoint(summary: Mapping[str, Any], name: str = "best.pt") -> str:
    """``run:<run id>/<name>``, a checkpoint of a run in the runs folder: it goes into a later config's
    ``init_from``, so the config -- its hash and committed summaries -- carries no folder path and stays the
    same when a results set is built in staging or re-rendered on a fresh clone without checkpoints
    (``train.setup.checkpoint_path`` resolves it when that run is trained)."""
    return f"{RUN_REF}{summary['run_id']}/{name}"
