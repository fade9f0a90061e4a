"""Datasets as in-memory uint8 tensors: CIFAR-100/10 pickles, image folders, a synthetic smoke set.

``load_dataset(spec)`` returns a ``Dataset`` holding train/test (and optionally val) ``Split``s of
uint8 ``[N, 3, H, W]`` images and int64 labels, plus class names and the normalisation constants
(docs/method.md §2). Augmentation and normalisation happen later, on batches (``normalize``).

Specs:
- ``cifar100`` / ``cifar10``: the official python-pickle folders under ``root`` or ``MICRONET_DATA``
  (default ``~/.cache/micronet/data``); downloaded (md5-checked archive) when missing and allowed.
  md5 of the extracted pickles (docs/method.md §2): ``verify=None`` checks a file when it holds the official
  number of images (small test pickles in the official layout are not checked), ``True`` always
  checks the known files, ``False`` never. A mismatch names the file and the expected md5.
- ``imagefolder:<path>``: ``train/<class>/*`` + ``test/<class>/*``; decoded once, cached as one ``.pt``
  under ``MICRONET_CACHE/imagefolder`` keyed by the tree's listing (paths, sizes, mtimes). A relative
  path that does not exist is also looked up under ``MICRONET_IMAGEFOLDER_ROOT``.
- ``synthetic``: deterministic, CIFAR-shaped, learnable (class colour + oriented stripes + noise).

A few real test images, not a data set (issue #11): ``load_labelled_samples(folder)`` and
``cifar100_test_head(n)`` (``samples``).

Modules, one job each: ``core`` (Split, Dataset, normalize, subsets), ``cifar`` (official pickles),
``files`` (finding image folders, reading image files), ``imagefolder`` (decoded, cached trees),
``samples`` (labelled sample folders), ``synthetic`` (the smoke set).
"""

from __future__ import annotations

import os

from .cifar import _CIFAR, CIFAR_FOLDERS, DOWNLOAD_TIMEOUT_S, data_root, load_cifar
from .core import (CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, Dataset, Split, normalize,
                   stratified_subset, subset, with_validation)
from .files import (IMAGE_EXTENSIONS, decode_image, find_image_folder, first_per_class, is_image,
                    read_images, resolve_image_folder)
from .imagefolder import load_imagefolder
from .samples import cifar100_test_head, load_labelled_samples
from .synthetic import load_synthetic

__all__ = [
    "Split", "Dataset", "load_dataset", "normalize", "stratified_subset", "subset", "with_validation",
    "CIFAR100_MEAN", "CIFAR100_STD", "CIFAR10_MEAN", "CIFAR10_STD", "data_root", "IMAGE_EXTENSIONS",
    "load_labelled_samples", "cifar100_test_head", "CIFAR_FOLDERS", "DOWNLOAD_TIMEOUT_S",
    "find_image_folder", "resolve_image_folder", "decode_image", "is_image", "read_images", "first_per_class",
]


def load_dataset(spec: str, *, root: str | os.PathLike | None = None, download: bool = True, seed: int = 0,
                 synthetic_classes: int = 10, synthetic_train_per_class: int = 500, synthetic_test_per_class: int = 100,
                 verify: bool | None = None, workers: int | None = None) -> Dataset:
    """Load a dataset by spec: ``cifar100``, ``cifar10``, ``imagefolder:<path>`` or ``synthetic``.

    ``root``/``download``/``verify`` apply to CIFAR (see module docstring); ``seed`` and ``synthetic_*``
    to ``synthetic``; ``workers`` is the decode thread count for a first image-folder load (default 2).
    """
    if not isinstance(spec, str):
        raise ValueError(f"dataset spec must be a string, got {type(spec).__name__}")
    if spec in _CIFAR:
        return load_cifar(spec, data_root(root), download=download, verify=verify)
    if spec.startswith("imagefolder:") and len(spec) > len("imagefolder:"):
        return load_imagefolder(spec[len("imagefolder:"):], workers=workers or min(2, os.cpu_count() or 1))
    if spec == "synthetic":
        return load_synthetic(seed=seed, classes=synthetic_classes, train_per_class=synthetic_train_per_class,
                              test_per_class=synthetic_test_per_class)
    raise ValueError(f"unknown dataset spec {spec!r}; expected one of "
                     "'cifar100', 'cifar10', 'imagefolder:<path>', 'synthetic'")
