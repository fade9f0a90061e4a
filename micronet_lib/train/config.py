"""``TrainConfig``: the one object that drives a training run, and the ``smoke``/``cpu``/``paper`` profiles.

The ``paper`` profile is the authors' recipe exactly (docs/method.md §5.8, "authors' script default"
column): ver2, SGD 0.1 Nesterov momentum 0.9, weight decay 1e-5 on every parameter, 4 cycles × 150
epochs of the 4×-replicated (200k-sample) epoch with the four Fast-AutoAugment sets, cosine with the
step-at-epoch-start formula and η_min 5e-4 (§5.4), a fresh optimiser per cycle, batch 128, CutMix
α = 1 on every batch (§6.4), orthogonality 0.7 over the 68 1×1 convs (§6.1), cross-entropy, dropout
0.3, BN momentum 0.01 (§3.1), fp32 (TF32 off on CUDA), and model selection on the *test* set (§5.7) -- marked as such.

Every other profile is a reduced budget; each field that differs from ``paper`` is listed in
``TrainConfig.deviations`` with the reason, and that list is stored with every run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
from dataclasses import dataclass, fields
from typing import Any, Iterable

from micronet_lib.train.profiles import PROFILES, list_profiles
from micronet_lib.regularizers.labels import default_epsilon

__all__ = ["TrainConfig", "PROFILES", "list_profiles", "parse_overrides"]

_LOSSES = ("ce", "ls", "wls")
_MIXES = ("cutmix", "mixup", "none")
_SCHEDULES = ("cosine", "step")
_PRECISIONS = ("fp32", "bf16", "fp16", "auto")
_MEMORY_FORMATS = ("contiguous", "channels_last", "auto")
_SELECT = ("val", "test", "last")
_PRUNE_SCOPES = ("global", "layer")
_PRUNE_TIES = ("exact", "threshold")  # pruning.criteria.TIE_RULES
_ORTHO_LAYERS = ("all_1x1", "expand", "project")
_STRIDE2_SE = ("discard", "apply", "skip")
_CAPTURE = ("off", "graph", "compile")  # train.step.CAPTURE_KINDS
# Fields added after results sets were committed: left out of to_dict (so of the config hash and the
# stored config) at their default, so every earlier run keeps its hash and resumes.
_OMITTED_AT_DEFAULT = {"capture_step": "off"}


def _allowed(name: str, value: Any, allowed: Iterable[Any]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"TrainConfig.{name}={value!r} is not allowed; allowed values: {', '.join(map(repr, allowed))}")


def _positive(name: str, value: Any, *, zero_ok: bool = False, kind: type = int) -> None:
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"TrainConfig.{name}={value!r} must be an integer")
    if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ValueError(f"TrainConfig.{name}={value!r} must be a number")
    if value < 0 or (value == 0 and not zero_ok):
        bound = ">= 0" if zero_ok else "> 0"
        raise ValueError(f"TrainConfig.{name}={value!r} must be {bound}")


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a run. Defaults are the authors' recipe (docs/method.md §5.8); see ``PROFILES``."""

    # --- bookkeeping
    profile: str = "paper"              # the profile the config was built from (deviations are relative to "paper")
    seed: int = 0                       # seeds data order, augmentation, CutMix, dropout, ortho vectors (authors: unseeded)
    # --- model (docs/method.md §3)
    model: str = "micronet_v2"          # registry name; the authors' script default is ver2
    width_mult: float = 1.0             # 1.0 = the paper's widths
    depth_mult: float = 1.0             # 1.0 = the paper's 16 blocks
    dropout: float = 0.3                # before the classifier (§3.1 head)
    bn_momentum: float = 0.01           # PyTorch convention; "0.99" in TF terms (§3.1)
    stride2_se: str = "discard"         # faithful: dead SE computed, not applied (§3.1)
    init_from: str | None = None        # released name ("micronet_v2_pr_45") or checkpoint path; None = fresh init
    # --- data (docs/method.md §2, §5.1-5.2)
    dataset: str = "cifar100"           # load_dataset spec: cifar100 | cifar10 | imagefolder:<path> | synthetic
    data_root: str | None = None        # folder for the dataset files (None: MICRONET_DATA / default cache)
    train_per_class: int | None = None  # stratified subset of train (None = all)
    val_per_class: int | None = None    # validation carved out of train (None = no val split)
    test_per_class: int | None = None   # stratified subset of test (None = all)
    augment: str = "fastaa4x"           # augment.build_pipeline name; fastaa4x = 4 policy sets, 4 copies/epoch
    # --- objective (docs/method.md §5.5, §6)
    loss: str = "ce"                    # ce (authors' default) | ls | wls
    epsilon: float | None = None        # smoothing ε of this run's loss; None = the authors' ε for its stage (loss_epsilon)
    ortho_coef: float = 0.7             # λ on the mean SRIP penalty (§6.1); 0 disables
    ortho_layers: str = "all_1x1"       # the 68 1×1 convs
    mix: str = "cutmix"                 # input mixing (§6.4)
    mix_prob: float = 1.0               # probability per batch
    mix_alpha: float = 1.0              # Beta(α, α)
    # --- optimiser (docs/method.md §5.3)
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-5
    decay_1d: bool = True               # authors: decay on every parameter incl. BN γ/β and biases (§5.3)
    batch_size: int = 128
    # --- schedule (docs/method.md §5.4)
    schedule: str = "cosine"            # cosine with warm restarts (one cosine per cycle) | step
    cycles: int = 4                     # fresh optimiser + fresh schedule per cycle
    epochs_per_cycle: int = 150         # in the authors' epochs (copies_per_epoch × the train set)
    lr_min: float = 5e-4                # η_min
    step_milestones: tuple[int, ...] = (100, 150)  # only for schedule="step" (the authors' unused alternative)
    step_gamma: float = 0.1
    # --- pruning (docs/method.md §8)
    prune_rates: tuple[float, ...] | None = None   # per-cycle global sparsity in %, e.g. (15, 30, 45, 60)
    prune_scope: str = "global"
    prune_ties: str = "exact"           # pruning.criteria tie rule: exact count, or the authors' literal threshold
    # --- evaluation and model selection (docs/method.md §5.7)
    select_on: str = "test"             # authors: best epoch per cycle by TEST top-1 (optimistic); "val" is honest
    bn_recalibrate_images: int = 0      # >0: re-estimate BN stats on this many train images before each eval (on a copy, in the eval mode)
    eval_batch_size: int = 256
    # --- execution
    # (execution mode: how steps run, not what they compute; micronet_lib/accel/execution.py)
    precision: str = "fp32"             # fp32 (authors) | bf16 (autocast) | fp16 (autocast + grad scaler, CUDA only) | auto
    memory_format: str = "contiguous"   # contiguous (authors) | channels_last | auto (auto: calibrated per machine, cached,
                                        # recorded in the run's execution.json and reused on resume)
    channels_last: bool = False         # legacy spelling of memory_format="channels_last" (kept: older run records)
    compile: bool = False               # torch.compile the training forward
    capture_step: str = "off"           # off | graph (whole step as one CUDA graph) | compile (reduce-overhead):
                                        # train/step.py; on a CPU the static step runs eagerly
    device: str = "auto"                # auto → cuda, mps, cpu
    allow_tf32: bool = False            # False: fp32 is true fp32 on CUDA (authors, PyTorch 1.1); True: TF32 matmul/conv
    checkpoint_every: int = 1           # epochs between checkpoints (the last epoch is always checkpointed)

    def __post_init__(self) -> None:
        # Type coercion first: YAML/JSON give lists where we store tuples (hashable, frozen).
        for name in ("step_milestones", "prune_rates"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        if not isinstance(self.profile, str) or not self.profile:
            raise ValueError(f"TrainConfig.profile={self.profile!r} must be a non-empty string")
        for f in fields(self):  # NaN passes every range check below (all comparisons are False): refuse it first
            value = getattr(self, f.name)
            for item in value if isinstance(value, tuple) else (value,):
                if isinstance(item, float) and not math.isfinite(item):
                    what = "hold finite numbers" if isinstance(value, tuple) else "be a finite number"
                    raise ValueError(f"TrainConfig.{f.name}={value!r} must {what}")
        _positive("seed", self.seed, zero_ok=True)
        for name in ("width_mult", "depth_mult", "lr", "batch_size", "eval_batch_size"):
            _positive(name, getattr(self, name), kind=int if name.endswith("size") else float)
        for name in ("cycles", "epochs_per_cycle", "checkpoint_every"):
            _positive(name, getattr(self, name))
        for name in ("dropout", "mix_prob"):
            value = getattr(self, name)
            _positive(name, value, zero_ok=True, kind=float)
            if value > 1:
                raise ValueError(f"TrainConfig.{name}={value!r} must be in [0, 1]")
        if not 0 < self.bn_momentum <= 1:
            raise ValueError(f"TrainConfig.bn_momentum={self.bn_momentum!r} must be in (0, 1] (PyTorch convention)")
        for name in ("weight_decay", "momentum", "ortho_coef", "lr_min", "mix_alpha", "step_gamma"):
            _positive(name, getattr(self, name), zero_ok=True, kind=float)
        if self.mix != "none" and self.mix_alpha <= 0:
            raise ValueError(f"TrainConfig.mix_alpha={self.mix_alpha!r} must be > 0 when mix={self.mix!r}")
        if self.lr_min > self.lr:
            raise ValueError(f"TrainConfig.lr_min={self.lr_min!r} must not exceed lr={self.lr!r}")
        if self.nesterov and self.momentum == 0:
            raise ValueError("TrainConfig.nesterov=True needs momentum > 0 (got momentum=0)")
        _positive("bn_recalibrate_images", self.bn_recalibrate_images, zero_ok=True)
        for name in ("train_per_class", "val_per_class", "test_per_class"):
            if getattr(self, name) is not None:
                _positive(name, getattr(self, name))
        if self.epsilon is not None:
            _positive("epsilon", self.epsilon, zero_ok=True, kind=float)
            if self.epsilon >= 1:
                raise ValueError(f"TrainConfig.epsilon={self.epsilon!r} must be in [0, 1)")
        _allowed("loss", self.loss, _LOSSES)
        _allowed("mix", self.mix, _MIXES)
        _allowed("schedule", self.schedule, _SCHEDULES)
        _allowed("precision", self.precision, _PRECISIONS)
        _allowed("memory_format", self.memory_format, _MEMORY_FORMATS)
        _allowed("select_on", self.select_on, _SELECT)
        _allowed("prune_scope", self.prune_scope, _PRUNE_SCOPES)
        _allowed("prune_ties", self.prune_ties, _PRUNE_TIES)
        if self.prune_ties != "exact" and self.prune_rates is None:
            raise ValueError(f"TrainConfig.prune_ties={self.prune_ties!r} has no effect without prune_rates; "
                             "set prune_rates (a pruning run) or drop prune_ties")
        if self.loss == "ce" and self.epsilon:
            raise ValueError(f"TrainConfig.epsilon={self.epsilon!r} has no effect with loss='ce'; "
                             "use loss='ls' or 'wls', or drop epsilon")
        if not isinstance(self.allow_tf32, bool):
            raise ValueError(f"TrainConfig.allow_tf32={self.allow_tf32!r} must be true or false")
        _allowed("ortho_layers", self.ortho_layers, _ORTHO_LAYERS)
        _allowed("capture_step", self.capture_step, _CAPTURE)
        if self.capture_step != "off" and self.precision == "fp16":
            raise ValueError("TrainConfig.capture_step needs precision fp32, bf16 or auto: fp16's grad scaler reads "
                             "the host every step; use precision='bf16' or capture_step='off'")
        _allowed("stride2_se", self.stride2_se, _STRIDE2_SE)
        if self.select_on == "val" and not self.val_per_class:
            raise ValueError(
                "TrainConfig.select_on='val' needs a validation split: set val_per_class (e.g. 50), "
                "or select_on='test' to reproduce the authors (docs/method.md §5.7)"
            )
        if not all(isinstance(m, int) and m > 0 for m in self.step_milestones) or list(self.step_milestones) != sorted(
            self.step_milestones
        ):
            raise ValueError(f"TrainConfig.step_milestones={self.step_milestones!r} must be increasing positive integers")
        if self.prune_rates is not None:
            rates = self.prune_rates
            if len(rates) != self.cycles:
                raise ValueError(
                    f"TrainConfig.prune_rates={rates!r} has {len(rates)} entries but cycles={self.cycles}; "
                    "give one global sparsity (%) per cycle, e.g. (15, 30, 45, 60) for 4 cycles (docs/method.md §8.3)"
                )
            if any(not isinstance(r, (int, float)) or isinstance(r, bool) or not 0 <= r < 100 for r in rates):
                raise ValueError(f"TrainConfig.prune_rates={rates!r}: every rate must be a percentage in [0, 100)")
            if list(rates) != sorted(rates):
                raise ValueError(f"TrainConfig.prune_rates={rates!r} must be non-decreasing (masks are nested, §8.4)")
        if not isinstance(self.device, str) or not self.device:
            raise ValueError(f"TrainConfig.device={self.device!r}; allowed: 'auto', 'cpu', 'cuda', 'cuda:N', 'mps'")
        if self.profile not in PROFILES and self.profile != "custom":
            raise ValueError(f"TrainConfig.profile={self.profile!r}; allowed: {', '.join(list_profiles())}, 'custom'")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_profile(cls, name: str, **overrides: Any) -> "TrainConfig":
        """The named profile with keyword overrides applied (unknown keys raise ``ValueError``)."""
        if name not in PROFILES:
            raise ValueError(f"unknown training profile {name!r}; allowed: {', '.join(list_profiles())}")
        values = dict(PROFILES[name]["values"], profile=name)
        _check_keys(overrides)
        values.update(overrides)
        return cls(**values)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Inverse of :meth:`to_dict` (derived keys such as ``deviations`` are ignored)."""
        data = {k: v for k, v in data.items() if k not in _DERIVED_KEYS}
        _check_keys(data)
        return cls(**data)

    def replace(self, **changes: Any) -> "TrainConfig":
        _check_keys(changes)
        return dataclasses.replace(self, **changes)

    def with_overrides(self, assignments: Iterable[str]) -> "TrainConfig":
        """Apply ``["key=value", ...]`` strings, each value parsed from the field's annotation."""
        return self.replace(**parse_overrides(assignments))

    # ------------------------------------------------------------------ views
    def to_dict(self, *, with_derived: bool = False) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in _OMITTED_AT_DEFAULT or getattr(self, f.name) != _OMITTED_AT_DEFAULT[f.name]}
        data = {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}
        if with_derived:
            data["deviations"] = self.deviations
            data["selection_note"] = self.selection_note
            data["loss_epsilon"] = self.loss_epsilon
        return data

    def config_hash(self) -> str:
        """12 hex digits identifying the run: sha256 of the canonical JSON of every field."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def deviations(self) -> list[str]:
        """Every field that differs from the authors' recipe, with the reason (docs/method.md §5.8)."""
        paper = PROFILES["paper"]["values"]
        profile = PROFILES.get(self.profile, {})
        reasons, chosen = profile.get("reasons", {}), profile.get("values", {})
        out = []
        for f in fields(self):
            if f.name in ("profile", "device", "checkpoint_every", "data_root"):
                continue  # bookkeeping, not part of the recipe
            default = paper.get(f.name, f.default)
            value = getattr(self, f.name)
            if value != default:
                # A profile's reason explains the profile's own value; any other value was set for this run.
                why = reasons.get(f.name, "override") if value == chosen.get(f.name, default) else "override"
                out.append(f"{f.name}={value!r} (authors: {default!r}): {why}")
        return out

    @property
    def selection_note(self) -> str:
        if self.select_on == "test":
            return "best epoch per cycle selected on the TEST set, as the authors did (docs/method.md §5.7): optimistic"
        if self.select_on == "val":
            return "best epoch per cycle selected on a validation split carved from train (deviation, docs/method.md §5.7)"
        return "no selection: the last epoch of each cycle is kept"

    @property
    def stage(self) -> str:
        """"prune" for a pruning run (``prune_rates`` set), else "train" (pretraining), docs/method.md §5.6."""
        return "train" if self.prune_rates is None else "prune"

    @property
    def loss_epsilon(self) -> float:
        """The ε the loss is built with: ``epsilon``, or the authors' value for the loss and stage.

        Weighted LS: 0.3 in pretraining, 0.1 in the pruning cycles (docs/method.md §6.2, §8.4); uniform LS 0.1;
        cross-entropy 0.
        """
        return float(self.epsilon) if self.epsilon is not None else default_epsilon(self.loss, stage=self.stage)

    @property
    def total_epochs(self) -> int:
        return self.cycles * self.epochs_per_cycle


_DERIVED_KEYS = ("deviations", "selection_note", "loss_epsilon")


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _check_keys(keys: Iterable[str]) -> None:
    known = [f.name for f in fields(TrainConfig)]
    for key in keys:
        if key not in known:
            raise ValueError(f"unknown TrainConfig key {key!r}; known keys: {', '.join(known)}")


def _parse_scalar(key: str, text: str, kind: Any) -> Any:
    if kind is bool:
        low = text.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"TrainConfig.{key}: {text!r} is not a boolean; allowed: true, false, 1, 0, yes, no")
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"TrainConfig.{key}: {text!r} is not a valid {kind.__name__}") from None


def _parse_value(key: str, text: str, hint: Any) -> Any:
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if type(None) in args:  # Optional[...]
        if text.strip().lower() in ("none", "null", ""):
            return None
        inner = [a for a in args if a is not type(None)]
        return _parse_value(key, text, inner[0])
    if origin is tuple:
        items = [s for s in text.replace("(", "").replace(")", "").split(",") if s.strip()]
        return tuple(_parse_scalar(key, s.strip(), args[0]) for s in items)
    return _parse_scalar(key, text, hint)


def parse_overrides(assignments: Iterable[str]) -> dict[str, Any]:
    """``["lr=0.05", "prune_rates=15,30", "nesterov=false"]`` → typed dict; unknown keys raise."""
    hints = _field_types()
    out: dict[str, Any] = {}
    for item in assignments:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key=value")
        key, text = item.split("=", 1)
        key = key.strip()
        _check_keys([key])
        out[key] = _parse_value(key, text, hints[key])
    return out


# ---------------------------------------------------------------------- profiles
# Each profile: "values" (fields that differ from the dataclass defaults) and "reasons" (why each
# differs from the authors' recipe). ``paper`` is the recipe itself, so it has no values.
