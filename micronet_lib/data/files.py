"""Image files on disk: where a named image folder is, and reading a few of its files.

One lookup for every caller that names a folder of images (the image-folder datasets, the labelled
sample folders, the quantisation and explorer images, ``micronet reproduce``): a path as given, and a
relative one that does not exist here is also tried under ``$MICRONET_IMAGEFOLDER_ROOT``. A few hundred
files are read directly (``read_images``) rather than through ``load_dataset("imagefolder:…")``, which
decodes and caches a whole tree.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp")
IMAGEFOLDER_ROOT_ENV = "MICRONET_IMAGEFOLDER_ROOT"


def find_image_folder(name: str | os.PathLike, *, also_under: Iterable[Path] = ()) -> Path | None:
    """``name`` if it is a folder, else (for a relative name) the first of ``$MICRONET_IMAGEFOLDER_ROOT/name``
    and ``<root>/name`` for ``also_under`` that is one; None when none is."""
    p = Path(name).expanduser()
    if p.is_dir():
        return p
    if p.is_absolute():
        return None
    extra = os.environ.get(IMAGEFOLDER_ROOT_ENV)
    for root in ([Path(extra)] if extra else []) + [Path(r) for r in also_under]:
        if (root / p).is_dir():
            return root / p
    return None


def resolve_image_folder(name: str | os.PathLike, *, what: str = "image folder") -> Path:
    """``find_image_folder(name)``, or a ``FileNotFoundError`` naming ``name`` and where it was looked for."""
    found = find_image_folder(name)
    if found is None:
        raise FileNotFoundError(f"{what} {Path(name).expanduser()} not found (relative paths are also tried under "
                                f"{IMAGEFOLDER_ROOT_ENV}={os.environ.get(IMAGEFOLDER_ROOT_ENV)!r})")
    return found


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def decode_image(path: Path) -> np.ndarray:
    """HWC uint8 RGB via PIL (torchvision 0.29's decoders are ~1.8x faster on 32x32 JPEGs but
    deprecated; decoding happens once per tree, so PIL's breadth of formats wins)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as exc:  # PIL raises several types for corrupt files; name the file in one error
        raise ValueError(f"cannot decode image {path}: {type(exc).__name__}: {exc}") from exc


def read_images(paths: Iterable[Path]) -> torch.Tensor:
    """uint8 ``[N, 3, H, W]`` RGB images from a handful of image files (no thread pool, no progress bar);
    a ``ValueError`` when they differ in size."""
    paths = list(paths)
    if not paths:
        raise ValueError("read_images needs at least one image file")
    arrays = [decode_image(p) for p in paths]
    if len({a.shape for a in arrays}) != 1:
        raise ValueError(f"images differ in size: {sorted({a.shape for a in arrays})} (e.g. {paths[0]})")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def first_per_class(folder: Path, n: int, *, per_class: int | None = None) -> list[Path]:
    """The first image files of each class folder of ``folder``, interleaved by rank and cut to ``n``:
    ``per_class`` of each (default ``ceil(n / classes)``)."""
    classes = sorted(d for d in folder.iterdir() if d.is_dir())
    if not classes:
        raise ValueError(f"{folder} holds no class folders")
    k = per_class if per_class is not None else -(-n // len(classes))
    lists = [[f for f in sorted(c.iterdir()) if is_image(f)][:k] for c in classes]
    return [p for group in zip(*lists) for p in group][:n]
