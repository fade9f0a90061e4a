"""The in-memory data model: ``Split``, ``Dataset``, normalisation, stratified subsets, validation splits."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

# docs/method.md §2 (CIFAR-100); CIFAR-10 values are the usual per-channel train statistics.
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


@dataclass(frozen=True)
class Split:
    """One split in memory: uint8 images ``[N, 3, H, W]`` and int64 labels ``[N]``."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"Split.images must be uint8 [N, 3, H, W], got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"Split.labels must be int64 [{self.images.shape[0]}], got {self.labels.dtype} "
                             f"{tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class Dataset:
    name: str  # "cifar100" | "cifar10" | "imagefolder:<path>" | "synthetic"
    description: str  # caption label, e.g. "CIFAR-10 (JPEG) stand-in"
    classes: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    train: Split
    test: Split
    val: Split | None = None

    def __post_init__(self) -> None:
        for field in ("mean", "std"):
            value = getattr(self, field)
            if len(value) != 3 or (field == "std" and min(value) <= 0):
                kind = "positive floats" if field == "std" else "floats"
                raise ValueError(f"Dataset.{field} must be 3 {kind}, got {value!r}")
        for split_name in ("train", "test", "val"):
            split = getattr(self, split_name)
            if split is None or not len(split):
                continue
            if int(split.labels.min()) < 0 or int(split.labels.max()) >= len(self.classes):
                raise ValueError(f"Dataset.{split_name} labels must lie in [0, {len(self.classes)}), got "
                                 f"[{int(split.labels.min())}, {int(split.labels.max())}]")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def data_id(self) -> str:
        """Short identity for checkpoints and result sidecars: name and split sizes."""
        val = f"/val{len(self.val)}" if self.val is not None else ""
        return f"{self.name}:train{len(self.train)}{val}/test{len(self.test)}"

    def split(self, name: str) -> Split:
        if name not in ("train", "val", "test"):
            raise ValueError(f"split must be one of 'train', 'val', 'test', got {name!r}")
        result = getattr(self, name)
        if result is None:
            raise ValueError(f"dataset {self.name!r} has no 'val' split; carve one with with_validation()")
        return result


def normalize(images_uint8: torch.Tensor, mean, std) -> torch.Tensor:
    """``(x / 255 - mean) / std`` as float32; channels at dim -3, any leading dims (docs/method.md §2)."""
    if images_uint8.dtype != torch.uint8:
        raise ValueError(f"normalize expects uint8 images, got {images_uint8.dtype}")
    if images_uint8.ndim < 3 or images_uint8.shape[-3] != 3:
        raise ValueError(f"normalize expects [..., 3, H, W] images, got shape {tuple(images_uint8.shape)}")
    m = torch.as_tensor(mean, dtype=torch.float32, device=images_uint8.device).view(3, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=images_uint8.device).view(3, 1, 1)
    return images_uint8.to(torch.float32).div_(255.0).sub_(m).div_(s)


# ------------------------------------------------------------------------------------------ subsets

def _stratified_indices(labels: torch.Tensor, n_per_class: int, seed: int, classes: tuple[str, ...] = (),
                        what: str = "n_per_class") -> torch.Tensor:
    """Exactly ``n_per_class`` indices per class present, seeded; prefixes of one permutation per class,
    so a smaller subset with the same seed is contained in a larger one."""
    if isinstance(n_per_class, bool) or not isinstance(n_per_class, int) or n_per_class < 1:
        raise ValueError(f"n_per_class must be a positive int, got {n_per_class!r}")
    gen = torch.Generator().manual_seed(int(seed))
    chosen = []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        if len(idx) < n_per_class:
            name = f"class {classes[c]!r} ({c})" if c < len(classes) else f"class {c}"
            raise ValueError(f"{name} has {len(idx)} examples, fewer than {what}={n_per_class}; lower {what}")
        chosen.append(idx[torch.randperm(len(idx), generator=gen)[:n_per_class]])
    return torch.sort(torch.cat(chosen)).values


def _take(split: Split, idx: torch.Tensor) -> Split:
    return Split(split.images[idx].contiguous(), split.labels[idx].contiguous())


def stratified_subset(split: Split, n_per_class: int, *, seed: int, classes: tuple[str, ...] = (),
                      what: str = "n_per_class") -> Split:
    """``n_per_class`` examples of every class in ``split`` (original order kept), deterministic in ``seed``;
    ``classes`` and ``what`` (the option that set the count) name them in errors."""
    return _take(split, _stratified_indices(split.labels, n_per_class, seed, classes, what))


def subset(ds: Dataset, *, train_per_class: int | None = None, test_per_class: int | None = None,
           seed: int = 0) -> Dataset:
    """Budgeted copy of ``ds``: stratified train/test subsets (None keeps a split whole; val is kept)."""
    train = ds.train if train_per_class is None else stratified_subset(
        ds.train, train_per_class, seed=seed, classes=ds.classes, what="train_per_class (+ val_per_class)")
    test = ds.test if test_per_class is None else stratified_subset(
        ds.test, test_per_class, seed=seed + 1, classes=ds.classes, what="test_per_class")
    return replace(ds, train=train, test=test)


def with_validation(ds: Dataset, *, val_per_class: int, seed: int) -> Dataset:
    """Carve a stratified validation split out of train; the remaining train and val are disjoint."""
    if ds.val is not None:
        raise ValueError(f"dataset {ds.name!r} already has a val split ({len(ds.val)} examples)")
    val_idx = _stratified_indices(ds.train.labels, val_per_class, seed, ds.classes, "val_per_class")
    keep = torch.ones(len(ds.train), dtype=torch.bool)
    keep[val_idx] = False
    return replace(ds, train=_take(ds.train, torch.nonzero(keep).flatten()), val=_take(ds.train, val_idx))


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std of ``images / 255`` (population std), accumulated in float64 chunks."""
    s = torch.zeros(3, dtype=torch.float64)
    sq = torch.zeros(3, dtype=torch.float64)
    for chunk in images.split(4096):
        x = chunk.to(torch.float64) / 255.0
        s += x.sum(dim=(0, 2, 3))
        sq += (x * x).sum(dim=(0, 2, 3))
    n = images.shape[0] * images.shape[2] * images.shape[3]
    mean = s / n
    std = (sq / n - mean * mean).clamp_min(0).sqrt()
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)

