"""Cross-entropy, uniform and weighted label smoothing behind one loss interface (docs/method.md §6.2, §6.3).

``make_loss(kind, num_classes=...)`` returns a :class:`LabelLoss` called as
``loss(logits, y_a, y_b=None, lam=1.0)`` = λ·ℓ(z, y_a) + (1 − λ)·ℓ(z, y_b), the CutMix/Mixup form of
docs/method.md §5.5. Every kind is written as (1 − ε)·CE + ε·(−Σ_k q_k log p_k) with the smoothing
distribution q over the *other* classes, so ε = 0 is exactly cross-entropy.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LOSS_KINDS",
    "LS_EPSILON",
    "WLS_EPSILON_PRUNE",
    "WLS_EPSILON_TRAIN",
    "LabelLoss",
    "class_similarity",
    "default_epsilon",
    "make_loss",
]

log = logging.getLogger(__name__)

LOSS_KINDS = ("ce", "ls", "wls")
WLS_EPSILON_TRAIN = 0.3  # weighted LS during pretraining (docs/method.md §6.2)
WLS_EPSILON_PRUNE = 0.1  # weighted LS during the pruning cycles (docs/method.md §6.2, §8.4)
LS_EPSILON = 0.1  # uniform LS: q_y = 0.9, q_k = 0.1/99 (docs/method.md §6.3)


def default_epsilon(kind: str, *, stage: str = "train") -> float:
    """The authors' ε for ``kind`` ("ce" → 0) in ``stage`` ("train" | "prune")."""
    if kind not in LOSS_KINDS:
        raise ValueError(f"kind={kind!r} is not a loss; use one of {', '.join(LOSS_KINDS)}")
    if stage not in ("train", "prune"):
        raise ValueError(f"stage={stage!r} is not a stage; use 'train' or 'prune'")
    if kind == "ce":
        return 0.0
    if kind == "ls":
        return LS_EPSILON
    return WLS_EPSILON_TRAIN if stage == "train" else WLS_EPSILON_PRUNE


def class_similarity(classifier_weight: torch.Tensor) -> torch.Tensor:
    """S [C, C] from the classifier rows (docs/method.md §6.2): S_ij = exp|cos(w_i, w_j)| / Σ_{k≠i} exp|cos(w_i, w_k)|.

    The diagonal is 0 and every row sums to 1. Computed in float64 (the reference fixture is matched to
    ~3e-9) and returned in the weight's floating dtype; the weight is detached.
    """
    if classifier_weight.ndim != 2 or classifier_weight.shape[0] < 2:
        raise ValueError(f"classifier_weight must be [num_classes >= 2, features], got shape {tuple(classifier_weight.shape)}")
    w = classifier_weight.detach().to(torch.float64)
    unit = F.normalize(w, dim=1, eps=1e-12)
    e = torch.exp((unit @ unit.t()).abs())
    e.fill_diagonal_(0.0)
    s = e / e.sum(dim=1, keepdim=True)
    out_dtype = classifier_weight.dtype if classifier_weight.is_floating_point() else torch.float32
    return s.to(out_dtype)


def _uniform_similarity(num_classes: int) -> torch.Tensor:
    # S is kept in float64 and cast to the logits' dtype at use: an fp32 run sees exactly the
    # float32 rounding of the float64 S it always did, and a float64 run sees S unrounded.
    s = torch.full((num_classes, num_classes), 1.0 / (num_classes - 1), dtype=torch.float64)
    s.fill_diagonal_(0.0)
    return s


def _classifier_weight(model: nn.Module) -> torch.Tensor:
    # MicroNet's classifier is ``linear`` (docs/method.md §4.3); otherwise take the last nn.Linear.
    module = getattr(model, "linear", None)
    if not isinstance(module, nn.Linear):
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError(f"{type(model).__name__} has no nn.Linear classifier; pass its weight tensor instead")
        module = linears[-1]
    weight = module.weight
    mask = getattr(module, "mask", None)
    if isinstance(mask, torch.Tensor) and mask.shape == weight.shape:
        weight = weight * mask  # during pruning S comes from the masked weights (§6.2)
    return weight


class LabelLoss(nn.Module):
    """ℓ(z, y) = (1 − ε)·CE(z, y) + ε·(−Σ_k q_{y,k} log softmax(z)_k), batch mean.

    q is one-hot for "ce" (ε must be 0), uniform over the other classes for "ls" (docs/method.md §6.3; note
    this differs from ``torch``'s ``label_smoothing``, which also puts ε/C on the label), and the
    class-similarity row S_y for "wls" (§6.2). S starts uniform (what a random init gives, nearly) and
    is replaced by :meth:`update_similarity`; the authors do that at the start of every epoch
    (``update_every=1``, see :meth:`on_epoch_start`).
    """

    def __init__(self, kind: str, *, num_classes: int, epsilon: float, update_every: int = 1) -> None:
        super().__init__()
        if kind not in LOSS_KINDS:
            raise ValueError(f"kind={kind!r} is not a loss; use one of {', '.join(LOSS_KINDS)}")
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes={num_classes!r} must be an int >= 2")
        if not 0.0 <= float(epsilon) <= 1.0:
            raise ValueError(f"epsilon={epsilon!r} must lie in [0, 1]")
        if kind == "ce" and float(epsilon) != 0.0:
            raise ValueError(f"epsilon={epsilon!r} with kind='ce'; plain cross-entropy has no smoothing (use 'ls' or 'wls')")
        if not isinstance(update_every, int) or update_every < 1:
            raise ValueError(f"update_every={update_every!r} must be an int >= 1 (epochs between recomputations of S)")
        self.kind = kind
        self.num_classes = num_classes
        self.epsilon = float(epsilon)
        self.update_every = update_every
        self.register_buffer("similarity", _uniform_similarity(num_classes))

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, num_classes={self.num_classes}, epsilon={self.epsilon}"

    @torch.no_grad()
    def update_similarity(self, model_or_weight: nn.Module | torch.Tensor) -> torch.Tensor:
        """Recompute S from a model's classifier (or a weight tensor) for "wls"; a no-op otherwise."""
        if self.kind != "wls":
            return self.similarity
        weight = model_or_weight if isinstance(model_or_weight, torch.Tensor) else _classifier_weight(model_or_weight)
        if weight.shape[0] != self.num_classes:
            raise ValueError(f"classifier has {weight.shape[0]} classes but the loss was built for num_classes={self.num_classes}")
        s = class_similarity(weight.to(torch.float64)).to(device=self.similarity.device)
        self.similarity.copy_(s)
        return self.similarity

    def on_epoch_start(self, model: nn.Module, epoch: int) -> None:
        """Recompute S when ``epoch % update_every == 0`` (the authors: every epoch, before training)."""
        if self.kind == "wls" and epoch % self.update_every == 0:
            self.update_similarity(model)

    def _single(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits, target)
        if self.epsilon == 0.0:
            return ce
        logp = F.log_softmax(logits, dim=1)
        q = self.similarity.to(device=logits.device, dtype=logp.dtype)[target]
        smooth = -(q * logp).sum(dim=1).mean()
        return (1.0 - self.epsilon) * ce + self.epsilon * smooth

    def targets(self, y: torch.Tensor) -> torch.Tensor:
        """The target distribution q (rows sum to 1) for integer labels ``y``."""
        q = self.epsilon * self.similarity.to(device=y.device, dtype=torch.float32)[y]
        q[torch.arange(len(y), device=y.device), y] = 1.0 - self.epsilon
        return q

    def forward(self, logits: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor | None = None, lam: float = 1.0) -> torch.Tensor:
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"logits must be [N, {self.num_classes}], got shape {tuple(logits.shape)}")
        loss = self._single(logits, y_a)
        if y_b is None:
            return loss
        lam = float(lam)
        return lam * loss + (1.0 - lam) * self._single(logits, y_b)


def make_loss(kind: str = "ce", *, num_classes: int, epsilon: float | None = None, update_every: int = 1) -> LabelLoss:
    """Build the per-sample objective ℓ of docs/method.md §5.5; ``epsilon=None`` takes :func:`default_epsilon` (training)."""
    eps = default_epsilon(kind) if epsilon is None else epsilon
    return LabelLoss(kind, num_classes=num_classes, epsilon=eps, update_every=update_every)
