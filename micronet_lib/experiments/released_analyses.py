"""Analyses of the released checkpoints and the policy file that need no training (issue #8, 02–04).

Orthogonality of every 1×1 layer (the one-step estimate the authors train with vs the exact value,
docs/method.md §6.1) and singular-value spectra; the class-similarity matrix S of a classifier ordered by
CIFAR-100 superclass and its most similar class pairs (§6.2); Fast-AutoAugment op statistics (§7.4);
the released ver2 pruning chain and one-shot pruning curves (§4.4–§4.5, §8).
"""

from __future__ import annotations

import copy
import logging
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from micronet_lib.assets import load_policies
from micronet_lib.augment import FASTAA_4X_ORDER
from micronet_lib.data import CIFAR100_MEAN, CIFAR100_STD, normalize
from micronet_lib.evaluate import evaluate, recalibrate_bn
from micronet_lib.models.micronet import weight_group
from micronet_lib.progress import bars_enabled
from micronet_lib.pruning import global_sparsity, load_pruned, nesting_violations, oneshot_prune
from micronet_lib.regularizers import class_similarity, layer_spectral_penalty, select_layers
from micronet_lib.report.stats import wilson_interval
from micronet_lib.scoring import count

__all__ = [
    "CIFAR100_SUPERCLASSES",
    "CIFAR100_CLASSES",
    "orthogonality_table",
    "singular_values",
    "similarity_by_superclass",
    "similar_pairs",
    "policy_op_counts",
    "policy_op_stats",
    "chain_table",
    "oneshot_curve",
    "sample_logits",
    "sample_hits",
]

log = logging.getLogger(__name__)

# The 20 CIFAR-100 superclasses ("coarse labels") and their 5 classes each, in the data set's coarse
# label order (Krizhevsky 2009, the data set's meta file). The released classifiers' rows follow the
# fine-label order, which is these 100 names sorted alphabetically.
CIFAR100_SUPERCLASSES: dict[str, tuple[str, ...]] = {
    "aquatic mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit and vegetables": ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    "household electrical devices": ("clock", "keyboard", "lamp", "telephone", "television"),
    "household furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large man-made outdoor things": ("bridge", "castle", "house", "road", "skyscraper"),
    "large natural outdoor scenes": ("cloud", "forest", "mountain", "plain", "sea"),
    "large omnivores and herbivores": ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    "medium-sized mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    "vehicles 1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles 2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
}
CIFAR100_CLASSES: tuple[str, ...] = tuple(sorted(c for group in CIFAR100_SUPERCLASSES.values() for c in group))
_SUPER_OF = {c: s for s, group in CIFAR100_SUPERCLASSES.items() for c in group}


# --------------------------------------------------------------------------- orthogonality (§6.1)


def _group(name: str) -> str:
    try:
        return weight_group(f"{name}.weight")
    except ValueError:
        return "other"


def _weight(module: nn.Module) -> torch.Tensor:
    w = module.weight.detach()
    mask = getattr(module, "mask", None)
    return w * mask if isinstance(mask, torch.Tensor) and mask.shape == w.shape else w


def orthogonality_table(model: nn.Module, *, seed: int = 0) -> pd.DataFrame:
    """One row per 1×1 layer (``regularizers.select_layers``): group, shape, the authors' one-step
    estimate of σ_max(WᵀW − I)² (one draw from a generator seeded ``seed``) and its exact value,
    and the largest / smallest singular value of W (out × in)."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    with torch.no_grad():
        for name, module in select_layers(model, "all_1x1"):
            w = _weight(module)
            sv = torch.linalg.svdvals(w.reshape(w.shape[0], -1).double())
            rows.append(dict(
                layer=name, group=_group(name), out_ch=w.shape[0], in_ch=w.shape[1],
                one_step=float(layer_spectral_penalty(w, generator=gen)),
                exact=float(layer_spectral_penalty(w, exact=True)),
                sv_max=float(sv.max()), sv_min=float(sv.min()),
            ))
    if not rows:
        raise ValueError(f"{type(model).__name__} has no 1×1 convolution")
    return pd.DataFrame(rows)


def singular_values(model: nn.Module) -> dict[str, np.ndarray]:
    """Singular values (descending) of every 1×1 layer's W reshaped to (out, in); 1 everywhere = orthogonal."""
    with torch.no_grad():
        return {name: torch.linalg.svdvals(_weight(m).reshape(m.weight.shape[0], -1).double()).numpy()
                for name, m in select_layers(model, "all_1x1")}


# --------------------------------------------------------------------------- class similarity (§6.2)


def _check_classifier(weight: torch.Tensor) -> None:
    if weight.ndim != 2 or weight.shape[0] != len(CIFAR100_CLASSES):
        raise ValueError(f"expected a CIFAR-100 classifier weight [100, D], got shape {tuple(weight.shape)}")


def similarity_by_superclass(weight: torch.Tensor) -> pd.DataFrame:
    """S = ``regularizers.class_similarity(weight)`` as a 100 × 100 frame whose rows and columns are
    ordered by superclass (index: class names; ``attrs["superclass"]``: the superclass of each row)."""
    _check_classifier(weight)
    s = class_similarity(weight).double().numpy()
    order = [CIFAR100_CLASSES.index(c) for group in CIFAR100_SUPERCLASSES.values() for c in group]
    names = [CIFAR100_CLASSES[i] for i in order]
    frame = pd.DataFrame(s[np.ix_(order, order)], index=names, columns=names)
    frame.attrs["superclass"] = [_SUPER_OF[c] for c in names]
    return frame


def similar_pairs(weight: torch.Tensor, *, k: int = 10) -> pd.DataFrame:
    """The ``k`` class pairs with the largest |cos(w_i, w_j)| (what S is built from), with S both ways and
    whether the two classes share a superclass."""
    _check_classifier(weight)
    w = weight.detach().double()
    unit = torch.nn.functional.normalize(w, dim=1)
    cos = (unit @ unit.t()).abs().numpy()
    s = class_similarity(weight).double().numpy()
    i, j = np.triu_indices(len(cos), k=1)
    top = np.argsort(-cos[i, j], kind="stable")[:k]
    rows = []
    for t in top:
        a, b = CIFAR100_CLASSES[i[t]], CIFAR100_CLASSES[j[t]]
        rows.append(dict(class_a=a, class_b=b, superclass_a=_SUPER_OF[a], superclass_b=_SUPER_OF[b],
                         same_superclass=_SUPER_OF[a] == _SUPER_OF[b], abs_cos=float(cos[i[t], j[t]]),
                         S_ab=float(s[i[t], j[t]]), S_ba=float(s[j[t], i[t]])))
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- policies (§7.4)


def _policy_sets(policies: Mapping[str, Sequence] | None) -> dict[str, Sequence]:
    if policies is None:
        policies = load_policies()
    order = [n for n in FASTAA_4X_ORDER if n in policies] + [n for n in policies if n not in FASTAA_4X_ORDER]
    return {n: policies[n] for n in order}


def _short(name: str) -> str:
    return name.removeprefix("fa_").replace("_cifar100", "")


def policy_op_counts(policies: Mapping[str, Sequence] | None = None) -> pd.DataFrame:
    """Occurrences of each op in each policy set (docs/method.md §7.4's table): rows = ops (most frequent
    first), columns = ``<set> (<sub-policies>)``; each column sums to 2 × its sub-policies."""
    sets = _policy_sets(policies)
    counts = {}
    for name, subs in sets.items():
        ops = [op[0] for sub in subs for op in sub]
        counts[f"{_short(name)} ({len(subs)})"] = pd.Series(ops).value_counts()
    table = pd.DataFrame(counts).fillna(0).astype("int64")
    table = table.loc[table.iloc[:, 0].sort_values(ascending=False, kind="stable").index]
    table.index.name = "op"
    return table


def policy_op_stats(policies: Mapping[str, Sequence] | None = None) -> pd.DataFrame:
    """Per op and set: mean probability, mean level, and the expected number of applications per
    image (Σ p over the sub-policies holding the op / number of sub-policies, docs/method.md §7.2)."""
    rows = []
    for name, subs in _policy_sets(policies).items():
        ops: dict[str, list[tuple[float, float]]] = {}
        for sub in subs:
            for op, p, level in sub:
                ops.setdefault(op, []).append((float(p), float(level)))
        for op, vals in ops.items():
            p, lv = np.array(vals).T
            rows.append(dict(set=_short(name), op=op, count=len(vals), mean_prob=p.mean(), mean_level=lv.mean(),
                             per_image=p.sum() / len(subs)))
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- pruning (§4.4–§4.5, §8)


def _scores(model: nn.Module, conventions: Sequence[str]) -> dict[str, float]:
    out = {}
    for conv in conventions:
        s = count(model, convention=conv).summary
        out[f"score_{conv}"] = float(s["score"])
    return out


def chain_table(models: Mapping[str, nn.Module], *, conventions: Sequence[str] = ("kaist", "official")) -> pd.DataFrame:
    """One row per checkpoint of a chain (in the given order): global sparsity, scores, and nesting
    violations against the previous checkpoint (0 = its kept weights are a subset, docs/method.md §4.4)."""
    rows, prev = [], None
    for name, model in models.items():
        rows.append(dict(checkpoint=name, global_sparsity=global_sparsity(model), **_scores(model, conventions),
                         violations_vs_previous=None if prev is None else nesting_violations(prev, model)))
        prev = model
    return pd.DataFrame(rows)


def oneshot_curve(
    source: Any,
    rates: Sequence[float],
    *,
    dataset: Any = None,
    eval_images: int | None = None,
    recal_images: int = 2560,
    device: str = "cpu",
    conventions: Sequence[str] = ("kaist", "official"),
) -> pd.DataFrame:
    """One-shot global magnitude pruning of ``source`` (released name, path or model) to each rate
    (``pruning.oneshot_prune``; existing masks kept, so rates below the file's sparsity change nothing):
    global sparsity and score per rate; with ``dataset`` also test top-1 without and with BN
    recalibration on ``recal_images`` training images (docs/method.md §8.2), each with the 95 % Wilson
    interval of its single evaluation (``top1_low``/``top1_high``, ``images`` evaluated)."""
    from tqdm.auto import tqdm

    base = source if isinstance(source, nn.Module) else load_pruned(source)
    rows = []
    for rate in tqdm(rates, desc="one-shot rates", unit="rate", leave=False, disable=len(rates) < 2 or not bars_enabled()):
        model = oneshot_prune(copy.deepcopy(base), float(rate))
        row = dict(rate=float(rate), global_sparsity=global_sparsity(model), **_scores(model, conventions))
        if dataset is not None:
            plain = evaluate(model, dataset, "test", device=device, limit=eval_images, progress=False)
            recal = recalibrate_bn(copy.deepcopy(model), dataset, n_images=recal_images, device=device)
            recal = evaluate(recal, dataset, "test", device=device, limit=eval_images, progress=False)
            for key, r in (("top1", plain), ("top1_bn_recal", recal)):  # one evaluation each: Wilson interval
                iv = wilson_interval(r.correct, r.n)
                row.update({key: r.top1, f"{key}_low": iv.low, f"{key}_high": iv.high})
            row["images"] = plain.n
        rows.append(row)
        log.info("one-shot %s %%: %s", rate, row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------- real CIFAR-100 pixels (issue #11)


def sample_logits(models: Mapping[str, nn.Module], images_uint8: torch.Tensor) -> dict[str, np.ndarray]:
    """Eval-mode logits of each model on a few real images, through the project's own normalisation
    (``data.normalize`` with the CIFAR-100 mean/std of the authors' code, docs/method.md §2)."""
    x = normalize(images_uint8, CIFAR100_MEAN, CIFAR100_STD)
    out = {}
    for name, model in models.items():
        model.eval()
        with torch.no_grad():
            out[name] = model(x).float().numpy()
    return out


def sample_hits(logits: Mapping[str, np.ndarray], labels: torch.Tensor | np.ndarray) -> pd.DataFrame:
    """Top-1 hits of each model on the sample images with the Wilson interval of that single evaluation.
    A handful of images is a check of the whole path on real pixels, not an accuracy: the interval says so."""
    labels = np.asarray(labels)
    rows = []
    for name, z in logits.items():
        hits = int((z.argmax(axis=1) == labels).sum())
        iv = wilson_interval(hits, len(labels))
        rows.append({"checkpoint": name, "top-1 hits": hits, "images": len(labels),
                     "hit rate (%)": iv.estimate, "95 % Wilson low (%)": iv.low, "95 % Wilson high (%)": iv.high})
    return pd.DataFrame(rows)

