"""The data a run names, checked before any notebook starts (``micronet reproduce``)."""

from __future__ import annotations

import os
from pathlib import Path

from micronet_lib.data import CIFAR_FOLDERS, data_root, find_image_folder, load_dataset


def resolve_data(spec: str, folder: Path) -> str:
    """Check the data of a run exists before any notebook starts; return the spec the notebooks get.

    An ``imagefolder:`` path is taken relative to the current directory (then to
    ``$MICRONET_IMAGEFOLDER_ROOT``, as the data layer does) and rewritten relative to ``folder``, where
    the notebooks run -- not made absolute, so executed notebooks carry no machine-specific path.
    CIFAR pickles that are not on disk are fetched now (the data layer downloads them with md5
    checks), so an offline machine fails here, naming the folder, rather than in the middle of a run.
    """
    if spec.startswith("imagefolder:"):
        raw = spec.split(":", 1)[1]
        root = (find_image_folder(raw) or Path(raw).expanduser()).absolute()
        missing = [s for s in ("train", "test") if not (root / s).is_dir()]
        if missing:
            raise FileNotFoundError(
                f"data {spec!r}: {root} has no {' or '.join(missing)}/ folder "
                "(expected <root>/train/<class>/* and <root>/test/<class>/*)"
            )
        return "imagefolder:" + os.path.relpath(root.resolve(), folder.resolve())

    if spec in CIFAR_FOLDERS:
        folder_name, marker = CIFAR_FOLDERS[spec]
        if not (data_root() / folder_name / marker).is_file():
            try:
                load_dataset(spec, download=True)
            except (OSError, RuntimeError, ValueError) as exc:
                raise FileNotFoundError(
                    f"data {spec!r} is not available ({exc}). Put the official pickles under "
                    f"{data_root()} (or set MICRONET_DATA), or choose other data, e.g. "
                    "--data imagefolder:../shared/data/cifar10-jpeg (results are then labelled as that stand-in)"
                ) from exc
    return spec
