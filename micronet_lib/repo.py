"""The repository's layout: its root (``REPO``), the ``notebooks/`` folder, its ``NN_*.ipynb`` files and
``--only`` selection. The one place that knows where the checkout is."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable

REPO = Path(__file__).resolve().parents[1]
_NOTEBOOK = re.compile(r"^(\d\d)_[A-Za-z0-9_]+\.ipynb$")


def notebooks_dir() -> Path:
    """The repository's ``notebooks/`` folder."""
    return REPO / "notebooks"


def list_notebooks(folder: str | os.PathLike | None = None) -> list[Path]:
    """``NN_*.ipynb`` of ``folder`` (default the repository's ``notebooks/``), in order."""
    folder = Path(folder or notebooks_dir())
    return sorted(p for p in folder.glob("*.ipynb") if _NOTEBOOK.match(p.name))


def select_notebooks(notebooks: list[Path], only: str | Iterable[str] | None) -> list[Path]:
    if only is None:
        return notebooks
    wanted = [s.strip() for s in (only.split(",") if isinstance(only, str) else only) if s.strip()]
    known = {p.stem: p for p in notebooks}
    chosen = []
    for w in wanted:
        hits = [p for p in notebooks if p.stem == w or p.name[:2] == w.zfill(2)]
        if not hits:
            raise ValueError(f"--only {w!r} matches no notebook; available: {', '.join(known)}")
        chosen += [h for h in hits if h not in chosen]
    return sorted(chosen)
