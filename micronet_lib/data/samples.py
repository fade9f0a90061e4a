"""A few real test images, not a data set (issue #11): flat folders of labelled sample PNGs.

``load_labelled_samples(folder)`` reads ``<name>_<test index>_<label>.png`` files (e.g. the 20 CIFAR-100
test images of ``cifar100-samples/``) in test-index order; ``cifar100_test_head(n)`` returns the first
``n`` official CIFAR-100 test images, from the pickles when present, else from such a folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .cifar import data_root, load_cifar
from .core import Split
from .files import IMAGE_EXTENSIONS, read_images, resolve_image_folder


def load_labelled_samples(folder: str | os.PathLike) -> tuple[Split, tuple[int, ...]]:
    """Images named ``<anything>_<index>_<label>.<ext>`` in ``folder`` → (``Split``, their indices), sorted
    by index. A relative folder that does not exist is also looked up under ``MICRONET_IMAGEFOLDER_ROOT``.
    Decoding is the image-folder one (PIL, RGB), so these pixels take the same path as a training tree."""
    p = resolve_image_folder(folder, what="sample folder")
    entries = []
    for f in p.iterdir():
        if f.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        parts = f.stem.rsplit("_", 2)
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
            raise ValueError(f"sample image {f.name}: expected a name like cifar100_<index>_<label>{f.suffix}")
        entries.append((int(parts[1]), f, int(parts[2])))
    if not entries:
        raise ValueError(f"sample folder {p} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    entries.sort()
    try:
        images = read_images(f for _, f, _ in entries)
    except ValueError as exc:
        raise ValueError(f"sample images in {p}: {exc}") from exc
    return Split(images, torch.tensor([lab for _, _, lab in entries], dtype=torch.int64)), tuple(i for i, _, _ in entries)


def cifar100_test_head(n: int = 20, *, samples: str | os.PathLike = "cifar100-samples",
                       root: str | os.PathLike | None = None) -> tuple[Split, str]:
    """The first ``n`` CIFAR-100 test images and where they came from: the official pickles when they are
    on this machine (nothing is downloaded), else the sample folder ``samples`` (which must hold test
    images 0 .. n-1)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} must be a positive int")
    try:
        test = load_cifar("cifar100", data_root(root), download=False, verify=None).test
        return Split(test.images[:n].contiguous(), test.labels[:n].contiguous()), "CIFAR-100 test pickles"
    except FileNotFoundError:
        pass
    split, indices = load_labelled_samples(samples)
    if indices[:n] != tuple(range(min(n, len(indices)))) or len(indices) < n:
        raise ValueError(f"sample folder {samples} holds test indices {list(indices)}; need 0..{n - 1}")
    return Split(split.images[:n].contiguous(), split.labels[:n].contiguous()), f"{n} sample PNGs ({Path(samples).name})"

