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

A few real test images, not a data set (issue #11): ``load_labelled_samples(folder)`` reads a flat
folder of ``<name>_<test index>_<label>.png`` files (e.g. the 20 CIFAR-100 test images of
``cifar100-samples/``) in test-index order; ``cifar100_test_head(n)`` returns the first ``n`` official
CIFAR-100 test images, from the pickles when present, else from such a folder.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .fileio import atomic_torch_save

__all__ = [
    "Split", "Dataset", "load_dataset", "normalize", "stratified_subset", "subset", "with_validation",
    "CIFAR100_MEAN", "CIFAR100_STD", "CIFAR10_MEAN", "CIFAR10_STD", "data_root", "IMAGE_EXTENSIONS",
    "load_labelled_samples", "cifar100_test_head",
]

log = logging.getLogger(__name__)

# docs/method.md §2 (CIFAR-100); CIFAR-10 values are the usual per-channel train statistics.
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp")
DOWNLOAD_TIMEOUT_S = 20.0
_IMAGEFOLDER_CACHE_VERSION = 1  # bump when the cached layout changes


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

def _stratified_indices(labels: torch.Tensor, n_per_class: int, seed: int) -> torch.Tensor:
    """Exactly ``n_per_class`` indices per class present, seeded; prefixes of one permutation per class,
    so a smaller subset with the same seed is contained in a larger one."""
    if isinstance(n_per_class, bool) or not isinstance(n_per_class, int) or n_per_class < 1:
        raise ValueError(f"n_per_class must be a positive int, got {n_per_class!r}")
    gen = torch.Generator().manual_seed(int(seed))
    chosen = []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        if len(idx) < n_per_class:
            raise ValueError(f"class {c} has {len(idx)} examples, fewer than n_per_class={n_per_class}")
        chosen.append(idx[torch.randperm(len(idx), generator=gen)[:n_per_class]])
    return torch.sort(torch.cat(chosen)).values


def _take(split: Split, idx: torch.Tensor) -> Split:
    return Split(split.images[idx].contiguous(), split.labels[idx].contiguous())


def stratified_subset(split: Split, n_per_class: int, *, seed: int) -> Split:
    """``n_per_class`` examples of every class in ``split`` (original order kept), deterministic in ``seed``."""
    return _take(split, _stratified_indices(split.labels, n_per_class, seed))


def subset(ds: Dataset, *, train_per_class: int | None = None, test_per_class: int | None = None,
           seed: int = 0) -> Dataset:
    """Budgeted copy of ``ds``: stratified train/test subsets (None keeps a split whole; val is kept)."""
    train = ds.train if train_per_class is None else stratified_subset(ds.train, train_per_class, seed=seed)
    test = ds.test if test_per_class is None else stratified_subset(ds.test, test_per_class, seed=seed + 1)
    return replace(ds, train=train, test=test)


def with_validation(ds: Dataset, *, val_per_class: int, seed: int) -> Dataset:
    """Carve a stratified validation split out of train; the remaining train and val are disjoint."""
    if ds.val is not None:
        raise ValueError(f"dataset {ds.name!r} already has a val split ({len(ds.val)} examples)")
    val_idx = _stratified_indices(ds.train.labels, val_per_class, seed)
    keep = torch.ones(len(ds.train), dtype=torch.bool)
    keep[val_idx] = False
    return replace(ds, train=_take(ds.train, torch.nonzero(keep).flatten()), val=_take(ds.train, val_idx))


# --------------------------------------------------------------------------------------- CIFAR pickles

@dataclass(frozen=True)
class _CifarLayout:
    folder: str
    archive: str
    archive_md5: str
    train: tuple[tuple[str, str], ...]  # (file, md5)
    test: tuple[tuple[str, str], ...]
    meta: tuple[str, str]
    label_key: str
    names_key: str
    images_per_file: dict  # official counts: a file holding this many images is checked in verify=None
    description: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


_CIFAR = {
    # docs/method.md §2 table (CIFAR-100); CIFAR-10 md5s are those published with the archive.
    "cifar100": _CifarLayout(
        "cifar-100-python", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
        (("train", "16019d7e3df5f24257cddd939b257f8d"),), (("test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),),
        ("meta", "7973b15100ade9c7d40fb424638fde48"), "fine_labels", "fine_label_names",
        {"train": 50000, "test": 10000}, "CIFAR-100", CIFAR100_MEAN, CIFAR100_STD),
    "cifar10": _CifarLayout(
        "cifar-10-batches-py", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
        tuple((f"data_batch_{i}", m) for i, m in enumerate(
            ("c99cafc152244af753f735de768cd75f", "d4bba439e000b95fd0a9bffe97cbabec", "54ebc095f3ab1f0389bbae665268c751",
             "634d18415352ddfa80567beed471001a", "482c414d41f54cd18b22e5b47cb7c3cb"), start=1)),
        (("test_batch", "40351d587109b95175f43aff81a1287e"),),
        ("batches.meta", "5ff9c542aee3614f3951f8cda6e48888"), "labels", "label_names",
        {f"data_batch_{i}": 10000 for i in range(1, 6)} | {"test_batch": 10000}, "CIFAR-10", CIFAR10_MEAN, CIFAR10_STD),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """The CIFAR pickles hold only dicts, lists, bytes and numpy arrays: refuse anything else."""

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.numeric", "_frombuffer"),
                ("numpy.core.numeric", "_frombuffer"),
                ("_codecs", "encode")}  # how Python 3 writes bytes into a protocol-2 pickle

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset pickle")
        return super().find_class(module, name)


def data_root(root: str | os.PathLike | None = None) -> Path:
    """``root``, else ``MICRONET_DATA``, else ``~/.cache/micronet/data``."""
    return Path(root or os.environ.get("MICRONET_DATA") or Path.home() / ".cache" / "micronet" / "data").expanduser()


def _read_pickle(path: Path, md5: str, verify: bool | None, official_n: int | None) -> dict:
    data = path.read_bytes()
    actual = hashlib.md5(data).hexdigest()
    mismatch = f"md5 mismatch for {path}: expected {md5}, got {actual}; delete the folder to re-download"
    if verify and actual != md5:
        raise ValueError(mismatch)
    try:
        obj = _NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as exc:  # a truncated/corrupt file: say which, and what it should have been
        raise ValueError(f"cannot read CIFAR pickle {path} ({type(exc).__name__}: {exc}); "
                         f"expected md5 {md5}, got {actual}") from exc
    if not isinstance(obj, dict):
        raise ValueError(f"CIFAR pickle {path} holds {type(obj).__name__}, expected a dict")
    if verify is None and official_n is not None and len(obj.get("data", ())) == official_n and actual != md5:
        raise ValueError(mismatch)
    return obj


def _download_cifar(layout: _CifarLayout, root: Path) -> None:
    import pooch
    import requests

    if os.environ.get("MICRONET_OFFLINE", "") not in ("", "0", "false", "False"):
        raise RuntimeError("MICRONET_OFFLINE is set, so nothing is downloaded")
    root.mkdir(parents=True, exist_ok=True)
    try:
        archive = pooch.retrieve(layout.archive, known_hash=f"md5:{layout.archive_md5}", path=root,
                                 fname=layout.archive.rsplit("/", 1)[-1],
                                 downloader=pooch.HTTPDownloader(progressbar=False, timeout=DOWNLOAD_TIMEOUT_S))
    except requests.exceptions.RequestException as exc:
        raise RuntimeError(f"download of {layout.archive} failed: {type(exc).__name__}: {exc}") from exc
    # Extract beside the target, then rename: a killed extraction leaves no half folder behind.
    with tempfile.TemporaryDirectory(dir=root, prefix=".extract-") as tmp:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(tmp, filter="data")
        os.replace(Path(tmp) / layout.folder, root / layout.folder)


def _load_cifar(name: str, root: Path, *, download: bool, verify: bool | None) -> Dataset:
    layout = _CIFAR[name]
    folder = root if (root / layout.meta[0]).is_file() else root / layout.folder
    if not (folder / layout.meta[0]).is_file():
        if not download:
            raise FileNotFoundError(f"{layout.description} not found: looked for {root / layout.folder}/ "
                                    f"(download=False); set MICRONET_DATA or root= to the folder holding "
                                    f"{layout.folder}/")
        try:
            _download_cifar(layout, root)
        except (RuntimeError, ValueError, OSError) as exc:
            raise FileNotFoundError(f"{layout.description} not found in {root / layout.folder}/ and could not be "
                                    f"downloaded ({exc}); set MICRONET_DATA or root= to a folder holding "
                                    f"{layout.folder}/") from exc
        folder = root / layout.folder

    def read_split(files) -> Split:
        images, labels = [], []
        for fname, md5 in files:
            path = folder / fname
            if not path.is_file():
                raise FileNotFoundError(f"missing CIFAR file {path} (expected md5 {md5})")
            obj = _read_pickle(path, md5, verify, layout.images_per_file.get(fname))
            if "data" not in obj or layout.label_key not in obj:
                raise ValueError(f"CIFAR pickle {path} lacks 'data' or {layout.label_key!r} (keys: {sorted(obj)})")
            data = np.asarray(obj["data"], dtype=np.uint8)
            if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(obj[layout.label_key]) != len(data):
                raise ValueError(f"CIFAR pickle {path}: data {data.shape} / {len(obj[layout.label_key])} labels, "
                                 f"expected [N, 3072] and N labels")
            images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))  # rows are R, G, B planes
            labels.append(torch.as_tensor(np.asarray(obj[layout.label_key]), dtype=torch.int64))
        return Split(torch.cat(images), torch.cat(labels))

    meta = _read_pickle(folder / layout.meta[0], layout.meta[1], verify, None)
    if layout.names_key not in meta:
        raise ValueError(f"CIFAR meta {folder / layout.meta[0]} lacks {layout.names_key!r} (keys: {sorted(meta)})")
    return Dataset(name, layout.description, tuple(str(c) for c in meta[layout.names_key]), layout.mean, layout.std,
                   read_split(layout.train), read_split(layout.test))


# ------------------------------------------------------------------------------------- image folders

def _resolve_folder(path: str) -> Path:
    p = Path(path).expanduser()
    extra = os.environ.get("MICRONET_IMAGEFOLDER_ROOT")
    if not p.is_dir() and not p.is_absolute() and extra and (Path(extra) / p).is_dir():
        p = Path(extra) / p
    if not (p / "train").is_dir() or not (p / "test").is_dir():
        raise FileNotFoundError(f"image folder {p} must hold train/<class>/* and test/<class>/* "
                                f"(relative paths are also tried under MICRONET_IMAGEFOLDER_ROOT={extra!r})")
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
            for f in sorted((root / split / cls).iterdir()):
                if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file():
                    st = f.stat()
                    h.update(f"{split}/{cls}/{f.name}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
                    files[split].append((f, label))
            if len(files[split]) == before:  # a class without images would train a model that never sees it
                raise ValueError(f"image folder class {root / split / cls} holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                                 f"add its images, or remove the class folder from both train/ and test/")
        if not files[split]:
            raise ValueError(f"image folder {root}/{split} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return classes, files, h.hexdigest()


def _decode(path: Path) -> np.ndarray:
    """HWC uint8 RGB via PIL (torchvision 0.29's decoders are ~1.8x faster on 32x32 JPEGs but
    deprecated; decoding happens once per tree, so PIL's breadth of formats wins)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as exc:  # PIL raises several types for corrupt files; name the file in one error
        raise ValueError(f"cannot decode image {path}: {type(exc).__name__}: {exc}") from exc


def _decode_split(entries: list[tuple[Path, int]], workers: int) -> Split:
    from tqdm.auto import tqdm

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        paths = [p for p, _ in entries]
        it = pool.map(_decode, paths, chunksize=256) if workers > 1 else map(_decode, paths)
        arrays = list(tqdm(it, total=len(entries), desc="decode", leave=False, mininterval=2.0))
    shape = arrays[0].shape
    for (path, _), a in zip(entries, arrays):
        if a.shape != shape:
            raise ValueError(f"image {path} is {a.shape[1]}x{a.shape[0]}, "
                             f"the first image of the split is {shape[1]}x{shape[0]}")
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return Split(images, torch.tensor([lab for _, lab in entries], dtype=torch.int64))


def _channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
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


def _load_imagefolder(path: str, *, workers: int) -> Dataset:
    from .assets import cache_dir

    root = _resolve_folder(path)
    classes, files, digest = _listing(root)
    cache = cache_dir() / "imagefolder" / f"{root.name}-{digest[:20]}.pt"
    description = "CIFAR-10 (JPEG) stand-in" if root.name == "cifar10-jpeg" else f"image folder {root.name}"
    blob = None
    if cache.is_file():
        log.info("image folder %s: cached arrays %s", root, cache)
        try:
            blob = torch.load(cache, map_location="cpu", weights_only=True)
        except Exception as exc:  # unreadable cache (another torch version, damaged disk): rebuild it
            log.warning("image folder cache %s unreadable (%s: %s); decoding again", cache, type(exc).__name__, exc)
    if blob is None:
        log.info("image folder %s: decoding %d images once (cache %s)", root, sum(map(len, files.values())), cache)
        train, test = _decode_split(files["train"], workers), _decode_split(files["test"], workers)
        mean, std = _channel_stats(train.images)
        blob = {"classes": list(classes), "mean": list(mean), "std": list(std), "digest": digest,
                "train_images": train.images, "train_labels": train.labels,
                "test_images": test.images, "test_labels": test.labels}
        atomic_torch_save(blob, cache)
    return Dataset(f"imagefolder:{path}", description, tuple(blob["classes"]), tuple(blob["mean"]), tuple(blob["std"]),
                   Split(blob["train_images"], blob["train_labels"]), Split(blob["test_images"], blob["test_labels"]))


# ------------------------------------------------------------------------------ labelled sample images

def load_labelled_samples(folder: str | os.PathLike) -> tuple[Split, tuple[int, ...]]:
    """Images named ``<anything>_<index>_<label>.<ext>`` in ``folder`` → (``Split``, their indices), sorted
    by index. A relative folder that does not exist is also looked up under ``MICRONET_IMAGEFOLDER_ROOT``.
    Decoding is the image-folder one (PIL, RGB), so these pixels take the same path as a training tree."""
    p = Path(folder).expanduser()
    extra = os.environ.get("MICRONET_IMAGEFOLDER_ROOT")
    if not p.is_dir() and not p.is_absolute() and extra and (Path(extra) / p).is_dir():
        p = Path(extra) / p
    if not p.is_dir():
        raise FileNotFoundError(f"sample folder {p} not found (relative paths are also tried under "
                                f"MICRONET_IMAGEFOLDER_ROOT={extra!r})")
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
    arrays = [_decode(f) for _, f, _ in entries]  # a handful of images: no thread pool, no progress bar
    if len({a.shape for a in arrays}) != 1:
        raise ValueError(f"sample images in {p} differ in size: {sorted({a.shape for a in arrays})}")
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return Split(images, torch.tensor([lab for _, _, lab in entries], dtype=torch.int64)), tuple(i for i, _, _ in entries)


def cifar100_test_head(n: int = 20, *, samples: str | os.PathLike = "cifar100-samples",
                       root: str | os.PathLike | None = None) -> tuple[Split, str]:
    """The first ``n`` CIFAR-100 test images and where they came from: the official pickles when they are
    on this machine (nothing is downloaded), else the sample folder ``samples`` (which must hold test
    images 0 .. n-1)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} must be a positive int")
    try:
        test = _load_cifar("cifar100", data_root(root), download=False, verify=None).test
        return Split(test.images[:n].contiguous(), test.labels[:n].contiguous()), "CIFAR-100 test pickles"
    except FileNotFoundError:
        pass
    split, indices = load_labelled_samples(samples)
    if indices[:n] != tuple(range(min(n, len(indices)))) or len(indices) < n:
        raise ValueError(f"sample folder {samples} holds test indices {list(indices)}; need 0..{n - 1}")
    return Split(split.images[:n].contiguous(), split.labels[:n].contiguous()), f"{n} sample PNGs ({Path(samples).name})"


# ------------------------------------------------------------------------------------------ synthetic

def _synthetic_split(num_classes: int, per_class: int, gen: torch.Generator) -> Split:
    """Class c: a colour and an oriented stripe pattern drawn once per class (``protos``), per image a
    random phase, contrast jitter and pixel noise, so pooled colour alone is informative but noisy."""
    protos = _synthetic_prototypes(num_classes)
    n = num_classes * per_class
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    colour, freq, angle = protos["colour"][labels], protos["freq"][labels], protos["angle"][labels]
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    phase = torch.rand(n, generator=gen) * 6.2832
    coord = xx * torch.cos(angle).view(-1, 1, 1) + yy * torch.sin(angle).view(-1, 1, 1)
    stripes = torch.sin(coord * freq.view(-1, 1, 1) + phase.view(-1, 1, 1))  # [N, 32, 32]
    contrast = 40 + 30 * torch.rand(n, 1, 1, 1, generator=gen)
    # Per-image brightness and tint jitter blur the class colours into each other: colour alone is
    # not enough for a perfect score, so a model that also uses the stripes does measurably better.
    jitter = 18 * torch.randn(n, 1, 1, 1, generator=gen) + 10 * torch.randn(n, 3, 1, 1, generator=gen)
    noise = 35 * torch.randn(n, 3, 32, 32, generator=gen)
    x = colour.view(n, 3, 1, 1) + jitter + contrast * stripes.unsqueeze(1) + noise
    perm = torch.randperm(n, generator=gen)  # mixed order, like the CIFAR pickles
    return Split(x.round().clamp(0, 255).to(torch.uint8)[perm], labels[perm])


def _synthetic_prototypes(num_classes: int) -> dict[str, torch.Tensor]:
    # Fixed seed: the class definitions do not depend on the sampling seed, only the images do.
    g = torch.Generator().manual_seed(1234567)
    return {"colour": 95 + 65 * torch.rand(num_classes, 3, generator=g),
            "freq": 0.3 + 0.9 * torch.rand(num_classes, generator=g),
            "angle": torch.rand(num_classes, generator=g) * 3.1416}


# Peak resident memory of _synthetic_split per image: ~19 float32 image-sized temporaries (measured
# 57.7 kB/image with psutil over 30k images), rounded up.
_SYNTHETIC_BYTES_PER_IMAGE = 60_000


def _check_memory(n_images: int, bytes_per_image: int, what: str, fix: str) -> None:
    """Refuse up front what would not fit in the memory available now (instead of an OOM kill later)."""
    import psutil

    need, available = n_images * bytes_per_image, psutil.virtual_memory().available
    if need > 0.9 * available:
        raise ValueError(f"{what} needs about {need / 1e9:.1f} GB of memory, but {available / 1e9:.1f} GB are available; {fix}")


def _load_synthetic(*, seed: int, classes: int, train_per_class: int, test_per_class: int) -> Dataset:
    for field, value in (("synthetic_classes", classes), ("synthetic_train_per_class", train_per_class),
                         ("synthetic_test_per_class", test_per_class)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (2 if field == "synthetic_classes" else 1):
            raise ValueError(f"{field} must be an int >= {2 if field == 'synthetic_classes' else 1}, got {value!r}")
    _check_memory(classes * (train_per_class + test_per_class), _SYNTHETIC_BYTES_PER_IMAGE,
                  f"synthetic data ({classes} classes x {train_per_class} train + {test_per_class} test images)",
                  "lower train_per_class / test_per_class")
    gen = torch.Generator().manual_seed(int(seed))
    train = _synthetic_split(classes, train_per_class, gen)
    test = _synthetic_split(classes, test_per_class, gen)
    mean, std = _channel_stats(train.images)
    names = tuple(f"class_{i:02d}" for i in range(classes))
    return Dataset("synthetic", "synthetic (smoke)", names, mean, std, train, test)


# ------------------------------------------------------------------------------------------- entry point

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
        return _load_cifar(spec, data_root(root), download=download, verify=verify)
    if spec.startswith("imagefolder:") and len(spec) > len("imagefolder:"):
        return _load_imagefolder(spec[len("imagefolder:"):], workers=workers or min(2, os.cpu_count() or 1))
    if spec == "synthetic":
        return _load_synthetic(seed=seed, classes=synthetic_classes, train_per_class=synthetic_train_per_class,
                               test_per_class=synthetic_test_per_class)
    raise ValueError(f"unknown dataset spec {spec!r}; expected one of "
                     "'cifar100', 'cifar10', 'imagefolder:<path>', 'synthetic'")
