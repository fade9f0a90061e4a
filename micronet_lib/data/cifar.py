"""The official CIFAR-100/10 python-pickle folders: md5-checked reads, download, the layout table."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .core import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, Dataset, Split

DOWNLOAD_TIMEOUT_S = 20.0


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


def load_cifar(name: str, root: Path, *, download: bool, verify: bool | None) -> Dataset:
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


# Each official folder and the file whose presence says the test split is there (``micronet reproduce``
# checks it before starting; 00_setup reports it).
CIFAR_FOLDERS = {name: (layout.folder, layout.test[0][0]) for name, layout in _CIFAR.items()}
