"""Evaluation (top-1, top-5, loss, per-class accuracy) and BatchNorm re-estimation.

``evaluate`` follows the authors' test protocol (docs/method.md §5.1 "Test": ToTensor + Normalize only, eval
mode, no test-time augmentation), batched under ``torch.inference_mode``; bf16 autocast and channels-last
are optional speed modes (logits are compared in fp32), ``"auto"`` picks the fastest the machine runs
(``micronet_lib.accel.execution``), and BatchNorm is folded into the preceding convolutions of an evaluated
copy (the same function up to float rounding; the model passed in is not changed). ``recalibrate_bn`` re-estimates the BN running
statistics with a cumulative average over normalised training images, e.g. after pruning (docs/method.md §8).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from micronet_lib.data import Dataset, normalize
from micronet_lib.accel.tf32 import fp32_mode
from micronet_lib.accel import allocator, execution
from micronet_lib.accel.fusion import fuse_conv_hardswish, fusion_available
from micronet_lib.models.masks import apply_masks

__all__ = ["EvalResult", "evaluate", "evaluate_splits", "inference_copy", "fold_batchnorm", "recalibrate_bn", "PRECISIONS"]

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "auto")
MEMORY_FORMATS = ("contiguous", "channels_last", "auto")
# A limited evaluation uses a fixed random subset (image folders are sorted by class, so "the first
# N images" would be one class); the seed is fixed so that repeated calls see the same images.
LIMIT_SEED = 0


@dataclass(frozen=True)
class EvalResult:
    """Accuracies in percent; ``loss`` is the mean cross-entropy; ``per_class`` top-1 % (nan: no images)."""

    top1: float
    top5: float
    loss: float
    per_class: np.ndarray = field(repr=False)
    n: int
    correct: int = 0
    split: str = "test"
    precision: str = "fp32"
    memory_format: str = "contiguous"
    bn_folded: bool = False
    activations_fused: int = 0  # conv + hard-swish pairs run as one oneDNN op (accel/fusion.py)
    mode_source: str = "config"  # config | cache | calibrated (precision/memory_format "auto")
    # The top-1 class of every evaluated image, in split order (int16): the per-image outcomes a paired
    # comparison of two models on the same images needs (stats.paired_effect, issue #28).
    predicted: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["per_class"] = [None if np.isnan(v) else float(v) for v in self.per_class]
        d.pop("predicted")  # per-image arrays go to run records (train.outcomes), not into summaries
        return d


def _check_positive_int(name: str, value, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer{' or None' if allow_none else ''}")


def fold_batchnorm(model: nn.Module) -> tuple[nn.Module, bool]:
    """An eval-mode copy of ``model`` with each conv → BatchNorm pair folded into one conv; ``model`` is untouched.

    Uses ``torch.fx.experimental.optimization.fuse`` (pruning masks are applied to the copy first, so
    the folded weights keep their zeros). Returns ``(copy, folded)``; a model fx cannot trace is
    returned unfolded (``folded=False``).
    """
    from torch.fx.experimental.optimization import fuse

    work = copy.deepcopy(model).eval()
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in work.modules()):
        return work, False
    apply_masks(work)
    try:
        return fuse(work, inplace=True), True
    except Exception as exc:  # noqa: BLE001 - any tracing failure: evaluate the unfolded copy
        log.debug("BatchNorm folding skipped for %s: %s", type(model).__name__, exc)
        return work, False


def inference_copy(model: nn.Module, mode, device: torch.device, *, fold_bn: bool = True,
                   fuse_activations: bool = True) -> tuple[nn.Module, dict]:
    """The eval-mode copy ``evaluate`` runs for execution ``mode``: BN folded, on ``device``, in the mode's
    memory format, and (CPU, fp32/bf16 weights) each conv → hard-swish pair fused into one oneDNN op
    (``models.fusion``; skipped where the op is missing or disagrees on a probe). ``model`` is untouched.

    Returns ``(copy, {"bn_folded": bool, "activations_fused": number of fused pairs})``.
    """
    work, folded = fold_batchnorm(model) if fold_bn else (copy.deepcopy(model).eval(), False)
    work.to(device)
    if mode.channels_last:
        work.to(memory_format=torch.channels_last)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}.get(mode.precision)
    weights_fp32 = all(p.dtype == torch.float32 for p in work.parameters())
    fused = 0
    # Only an fx graph (a folded copy) can be rewritten; a compiled mode compiles the unfused graph.
    if (fuse_activations and folded and device.type == "cpu" and not mode.compile and weights_fp32
            and dtype is not None and fusion_available(dtype)):
        fused = fuse_conv_hardswish(work, dtype=dtype, channels_last=mode.channels_last)
    return work, {"bn_folded": folded, "activations_fused": fused}


def resolve_eval_mode(model: nn.Module, *, batch_size: int, device: torch.device, precision: str = "auto",
                      memory_format: str = "auto", num_classes: int | None = None, fold_bn: bool = True,
                      fuse_activations: bool = True) -> dict:
    """The evaluation mode: explicit, or calibrated on the copies ``evaluate`` runs (cached per machine);
    see ``execution.resolve``."""
    def prepare(m: nn.Module, mode) -> nn.Module:
        return inference_copy(m, mode, device, fold_bn=fold_bn, fuse_activations=fuse_activations)[0]

    return execution.resolve(
        "eval", device, execution.eval_runner(model, batch_size=batch_size, device=device, prepare=prepare),
        precision=precision, memory_format=memory_format, compile=False, batch_size=batch_size,
        # the copy evaluate runs decides the speed: an unfolded or unfused copy is timed and cached apart
        model_key=execution.model_key(model, num_classes) + ("" if fold_bn else "|bn unfolded")
        + ("" if fuse_activations else "|unfused"),
    )


def evaluate(
    model: nn.Module,
    dataset: Dataset,
    split: str = "test",
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    channels_last: bool = False,
    memory_format: str | None = None,
    fold_bn: bool = True,
    fuse_activations: bool = True,
    limit: int | None = None,
    progress: bool = True,
    allow_tf32: bool = False,
) -> EvalResult:
    """Top-1/top-5 accuracy (%), mean loss and per-class top-1 of ``model`` on ``dataset.split(split)``.

    The model is moved to ``device`` (in place, as ``Module.to`` does); a copy is run in eval mode
    (BatchNorm folded when ``fold_bn``; on CPU each conv → hard-swish pair then runs as one oneDNN op
    when ``fuse_activations``, see ``inference_copy``), so the model's training flag and memory format
    are unchanged.
    ``memory_format`` ("contiguous" | "channels_last" | "auto") overrides ``channels_last``;
    ``precision="auto"`` / ``memory_format="auto"`` pick the fastest mode the machine runs (calibrated
    once, cached). ``limit`` evaluates a fixed random subset of that many images. On CUDA, fp32 is
    true fp32 unless ``allow_tf32`` (``tf32.fp32_mode``). Several splits: :func:`evaluate_splits`.
    """
    return evaluate_splits(
        model, dataset, (split,), batch_size=batch_size, device=device, precision=precision,
        channels_last=channels_last, memory_format=memory_format, fold_bn=fold_bn,
        fuse_activations=fuse_activations, limit=limit, progress=progress, allow_tf32=allow_tf32)[split]


def evaluate_splits(
    model: nn.Module,
    dataset: Dataset,
    splits: tuple[str, ...] | list[str] = ("test",),
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    channels_last: bool = False,
    memory_format: str | None = None,
    fold_bn: bool = True,
    fuse_activations: bool = True,
    limit: int | None = None,
    progress: bool = True,
    allow_tf32: bool = False,
) -> dict[str, EvalResult]:
    """:func:`evaluate` on each split of ``splits`` (options as there), from one mode choice and one
    evaluated copy: ``{split: EvalResult}``.

    Folding and fusing the copy costs about as much as evaluating a hundred images on a CPU (80 ms for
    ver2 on two cores), so a training epoch that scores val and test builds it once.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not supported; allowed: {', '.join(PRECISIONS)}")
    if memory_format is None:
        memory_format = "channels_last" if channels_last else "contiguous"
    if memory_format not in MEMORY_FORMATS:
        raise ValueError(f"memory_format={memory_format!r} is not supported; allowed: {', '.join(MEMORY_FORMATS)}")
    _check_positive_int("batch_size", batch_size)
    _check_positive_int("limit", limit, allow_none=True)
    if isinstance(splits, str):
        raise TypeError(f"splits={splits!r} must be a sequence of split names, e.g. ({splits!r},)")
    for split in splits:  # every split is checked before the copy is built
        if len(dataset.split(split)) == 0:
            raise ValueError(f"split {split!r} of dataset {dataset.name!r} is empty")
    device = torch.device(device)

    model.to(device)
    if device.type == "cpu":
        allocator.configure()
    chosen = resolve_eval_mode(model, batch_size=batch_size, device=device, precision=precision,
                               memory_format=memory_format, num_classes=dataset.num_classes, fold_bn=fold_bn,
                               fuse_activations=fuse_activations)
    mode = execution.ExecutionMode.from_dict(chosen["mode"])
    work, prepared = inference_copy(model, mode, device, fold_bn=fold_bn, fuse_activations=fuse_activations)
    described = dict(precision=mode.precision, memory_format=mode.memory_format, bn_folded=prepared["bn_folded"],
                     activations_fused=prepared["activations_fused"], mode_source=chosen["source"])
    return {split: _evaluate_copy(work, mode, dataset, split, device=device, batch_size=batch_size, limit=limit,
                                  progress=progress, allow_tf32=allow_tf32, described=described)
            for split in splits}


def _evaluate_copy(work: nn.Module, mode, dataset: Dataset, split: str, *, device: torch.device, batch_size: int,
                   limit: int | None, progress: bool, allow_tf32: bool, described: dict) -> EvalResult:
    """One split through the prepared copy ``work`` (see :func:`evaluate_splits`)."""
    data = dataset.split(split)
    n_total = len(data)
    indices = None
    if limit is not None and limit < n_total:
        gen = torch.Generator().manual_seed(LIMIT_SEED)
        indices = torch.randperm(n_total, generator=gen)[:limit].sort().values
    images = data.images if indices is None else data.images[indices]
    labels = data.labels if indices is None else data.labels[indices]
    n = int(labels.shape[0])
    num_classes = dataset.num_classes
    # Inputs in the model's own float type (a float64 model, e.g. tests/test_fidelity.py); autocast casts for bf16.
    input_dtype = next((p.dtype for p in work.parameters() if p.is_floating_point()), torch.float32)
    # Sums stay on the device until the end: no host read per batch.
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct5 = torch.zeros((), dtype=torch.int64, device=device)
    class_correct = torch.zeros(num_classes, dtype=torch.int64, device=device)
    class_total = torch.bincount(labels, minlength=num_classes)[:num_classes]
    predicted = torch.empty(n, dtype=torch.int16, device=device)
    with torch.inference_mode(), fp32_mode(allow_tf32=allow_tf32):
        bar = tqdm(total=n, desc=f"eval {split}", unit="img", disable=not progress, leave=False)
        for start in range(0, n, batch_size):
            x = normalize(images[start:start + batch_size].to(device, non_blocking=True), dataset.mean, dataset.std)
            x = x.to(input_dtype)
            y = labels[start:start + batch_size].to(device, non_blocking=True)
            if mode.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with execution.autocast(mode, device):
                logits = work(x)
            logits = logits.float()
            if start == 0 and (logits.ndim != 2 or logits.shape[1] != num_classes):
                raise ValueError(
                    f"model outputs {list(logits.shape[1:])} logits per image but dataset {dataset.name!r} has "
                    f"{num_classes} classes; build the model with num_classes={num_classes}"
                )
            loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
            top = logits.topk(min(5, num_classes), dim=1).indices
            hit1 = top[:, 0] == y
            predicted[start:start + batch_size] = top[:, 0]
            correct5 += (top == y[:, None]).any(dim=1).sum()
            class_correct += torch.bincount(y[hit1], minlength=num_classes)[:num_classes]
            bar.update(int(y.shape[0]))
        bar.close()
    class_correct = class_correct.cpu()
    correct1 = int(class_correct.sum())
    correct5 = int(correct5)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = 100.0 * class_correct.numpy() / class_total.numpy()
    result = EvalResult(
        top1=100.0 * correct1 / n, top5=100.0 * correct5 / n, loss=float(loss_sum) / n,
        per_class=per_class.astype(np.float64), n=n, correct=correct1, split=split, **described,
        predicted=predicted.cpu().numpy(),
    )
    log.info("%s %s: top-1 %.2f %%, top-5 %.2f %%, loss %.4f (n=%d)", dataset.name, split, result.top1, result.top5, result.loss, n)
    return result


def recalibrate_bn(
    model: nn.Module,
    dataset: Dataset,
    *,
    n_images: int = 2560,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    seed: int = 0,
    precision: str = "fp32",
    memory_format: str = "contiguous",
) -> nn.Module:
    """Re-estimate every BatchNorm's running mean/var on ``n_images`` normalised training images.

    Statistics are reset and accumulated as a cumulative average (``momentum=None``: every batch weighs
    the same; batches are made near-equal in size). Only the BN layers run in train mode (dropout stays
    off); afterwards each module's momentum and train/eval flag are restored. Returns ``model``.
    ``precision`` ("fp32" | "bf16") and ``memory_format`` ("contiguous" | "channels_last"): the execution
    mode of the forward passes, e.g. the one the statistics will be evaluated in (``fit`` passes its
    evaluation mode). The statistics are kept in float32 either way; for ver2 on 500 images, bf16 moved
    them by a median 0.14 % (variances) where 500 other images moved them by 0.9 %.
    """
    _check_positive_int("n_images", n_images)
    _check_positive_int("batch_size", batch_size)
    mode = execution.ExecutionMode(precision, memory_format)  # refuses unknown names before any work
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        raise ValueError(f"{type(model).__name__} has no BatchNorm layers to recalibrate")
    train = dataset.train
    if n_images > len(train):
        log.warning("recalibrate_bn: n_images=%d > %d training images; using all of them", n_images, len(train))
        n_images = len(train)
    gen = torch.Generator().manual_seed(int(seed))
    idx = torch.randperm(len(train), generator=gen)[:n_images]
    n_batches = -(-n_images // batch_size)
    device = torch.device(device)

    modes = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in bns}
    model.to(device).eval()
    try:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average over the recalibration batches
            m.train()
        with torch.no_grad(), execution.autocast(mode, device):
            for chunk in idx.tensor_split(n_batches):
                x = normalize(train.images[chunk].to(device), dataset.mean, dataset.std)
                model(x.contiguous(memory_format=torch.channels_last) if mode.channels_last else x)
    finally:
        for m, momentum in momenta.items():
            m.momentum = momentum
        for m, training in modes.items():
            m.train(training)
    log.info("recalibrated %d BN layers on %d training images (%d batches)", len(bns), n_images, n_batches)
    return model
