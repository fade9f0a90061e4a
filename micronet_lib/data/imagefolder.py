"""Image-folder datasets: ``train/<class>/*`` + ``test/<class>/*`` trees, decoded once and cached as one ``.pt``.

The cache carries its sha256 in a file beside it (``<cache>.sha256.json``, written after the cache): a
cache that does not match it (flipped bytes on disk, a foreign file) or has none is decoded again with a
warning, never trained on (a flipped byte in a pixel tensor loads without any error).
"""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ..runstore.checksums import file_digest
from ..fileio import atomic_torch_save, atomic_write_json
from .core import Dataset, Split, channel_stats
from .files import IMAGE_EXTENSIONS, IMAGEFOLDER_ROOT_ENV, decode_image, find_image_folder
from ..assets import cache_dir

log = logging.getLogger(__name__)

_IMAGEFOLDER_CACHE_VERSION = 1  # bump when the cached layout changes


def _resolve_folder(path: str) -> Path:
    p = find_image_folder(path) or Path(path).expanduser()
    if not (p / "train").is_dir() or not (p / "test").is_dir():
        raise FileNotFoundError(f"image folder {p} must hold train/<class>/* and test/<class>/* "
                                f"(relative paths are also tried under {IMAGEFOLDER_ROOT_ENV}="
                                f"{os.environ.get(IMAGEFOLDER_ROOT_ENV)!r})")
    return p

def _listing(root: Path) -> tuple[tuple[str, ...], dict[str, list[tuple[Path, int]]], str]:
    """Classes, per-split (file, label) lists, and a hash of relative paths + sizes + mtimes."""
    classes = tuple(sorted(d.name for d in (root / "train").iterdir() if d.is_dir()))
    test_classes = tuple(sorted(d.name for d in (root / "test").iterdir() if d.is_dir()))
    if not classes or classes != test_classes:
        raise ValueError(f"image folder {root}: train classes {classes} and test classes {test_classes} "
                         "must match and be non-empty")
    h = hashlib.sha256(f"v{_IMAGEFOLDER_CACHE_VERSION}\n".encode())
    files: dict[str, list[tuple[Path, int]]] = {}
    for split in ("train", "test"):
        files[split] = []
        for label, cls in enumerate(classes):
            before = len(files[split])
            # os.scandir: the file type comes with the listing, names sort as strings (sorting Path objects
            # and a stat per is_file() took ~2 s for CIFAR-10's 60,000 files); same order, same hash.
            with os.scandir(root / split / cls) as it:
                entries = sorted((e for e in it if os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS
                                  and e.is_file()), key=lambda e: e.name)
            for e in entries:
                st = e.stat()
                h.update(f"{split}/{cls}/{e.name}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
                files[split].append((Path(e.path), label))
            if len(files[split]) == before:  # a class without images would train a model that never sees it
                raise ValueError(f"image folder class {root / split / cls} holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                                 f"add its images, or remove the class folder from both train/ and test/")
        if not files[split]:
            raise ValueError(f"image folder {root}/{split} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return classes, files, h.hexdigest()


def _decode_split(entries: list[tuple[Path, int]], workers: int) -> Split:
    from tqdm.auto import tqdm

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        paths = [p for p, _ in entries]
        it = pool.map(decode_image, paths, chunksize=256) if workers > 1 else map(decode_image, paths)
        arrays = list(tqdm(it, total=len(entries), desc="decode", leave=False, mininterval=2.0))
    shape = arrays[0].shape
    for (path, _), a in zip(entries, arrays):
        if a.shape != shape:
            raise ValueError(f"image {path} is {a.shape[1]}x{a.shape[0]}, "
                             f"the first image of the split is {shape[1]}x{shape[0]}")
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return Split(images, torch.tensor([lab for _, lab in entries], dtype=torch.int64))


def _digest_path(cache: Path) -> Path:
    return cache.with_name(cache.name + ".sha256.json")


def _read_cache(cache: Path) -> dict | None:
    """The cached arrays if ``cache`` matches its recorded sha256 and loads; else None (decode again), with a warning."""
    import json

    try:
        recorded = json.loads(_digest_path(cache).read_text())
    except (OSError, ValueError):
        recorded = None
    found = file_digest(cache)
    if not isinstance(recorded, dict) or recorded.get("sha256") != found["sha256"]:
        why = ("has no recorded checksum" if not isinstance(recorded, dict)
               else f"fails its checksum ({found['bytes']} bytes, sha256 {found['sha256'][:12]}…; recorded "
                    f"{recorded.get('bytes')} bytes, {str(recorded.get('sha256'))[:12]}…)")
        log.warning("image folder cache %s %s; decoding the images again", cache, why)
        return None
    log.info("image folder cache %s (sha256 verified)", cache)
    try:
        return torch.load(cache, map_location="cpu", weights_only=True)
    except Exception as exc:  # unreadable cache (another torch version): rebuild it
        log.warning("image folder cache %s unreadable (%s: %s); decoding again", cache, type(exc).__name__, exc)
        return None


def load_imagefolder(path: str, *, workers: int) -> Dataset:
    root = _resolve_folder(path)
    classes, files, digest = _listing(root)
    cache = cache_dir() / "imagefolder" / f"{root.name}-{digest[:20]}.pt"
    description = "CIFAR-10 (JPEG) stand-in" if root.name == "cifar10-jpeg" else f"image folder {root.name}"
    blob = _read_cache(cache) if cache.is_file() else None
    if blob is None:
        log.info("image folder %s: decoding %d images once (cache %s)", root, sum(map(len, files.values())), cache)
        train, test = _decode_split(files["train"], workers), _decode_split(files["test"], workers)
        mean, std = channel_stats(train.images)
        blob = {"classes": list(classes), "mean": list(mean), "std": list(std), "digest": digest,
                "train_images": train.images, "train_labels": train.labels,
                "test_images": test.images, "test_labels": test.labels}
        atomic_torch_save(blob, cache)
        atomic_write_json(_digest_path(cache), file_digest(cache))
    return Dataset(f"imagefolder:{path}", description, tuple(blob["classes"]), tuple(blob["mean"]), tuple(blob["std"]),
                   Split(blob["train_images"], blob["train_labels"]), Split(blob["test_images"], blob["test_labels"]))

