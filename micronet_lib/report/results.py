"""Tables and figures of the companion: one helper, atomic writes, a fixed style, byte-stable reruns.

Every table the notebooks regenerate goes to ``<root>/tables/<name>.{csv,md}`` and every figure to
``<root>/figures/<name>.{png,svg}``, each with a sidecar ``<name>.meta.json`` naming the profile and the
data set that produced it (issue #8: "every table and figure caption names the profile and the
dataset"), the library version and the git commit. No file carries a timestamp, so rerunning a
notebook on the same inputs rewrites identical bytes and ``git diff`` shows only real changes.

``<root>`` is, in order: the ``root=`` argument, ``$MICRONET_RESULTS``, or the git-ignored
``results/scratch/default/`` of the repository. ``micronet reproduce`` points ``$MICRONET_RESULTS`` at
the results set it builds, and ``announce(params)`` (every notebook's check cell) at the notebook's
scratch set when it runs interactively (``micronet_lib.report.results_sets``): nothing writes into a
committed set unless ``micronet reproduce --publish`` builds it.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import logging
import os
import re
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from micronet_lib import __version__
from micronet_lib.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text
from micronet_lib.report.formatting import table_html, table_markdown
from micronet_lib.notes import note
from micronet_lib.repo import REPO
from micronet_lib.report.figures import figure_problems
from micronet_lib.report.results_sets import relative_to_repo, results_set
from micronet_lib.train.runs import RUNS_ENV
from micronet_lib.report.set_writers import hold_for_process

__all__ = [
    "RESULTS_ENV",
    "results_root",
    "caption",
    "check_meta",
    "apply_style",
    "save_table",
    "save_figure",
    "save",
    "publish",
    "note",
    "announce",
    "OutputsInfo",
]

log = logging.getLogger(__name__)

RESULTS_ENV = "MICRONET_RESULTS"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# A fixed salt makes matplotlib's SVG element ids (and so the file) identical on every run.
_SVG_HASHSALT = "micronet-companion"


def results_root(root: str | os.PathLike | None = None) -> Path:
    """The output folder: ``root`` if given, else ``$MICRONET_RESULTS``, else the repository's
    git-ignored ``results/scratch/default/``."""
    if root is not None:
        return Path(root)
    env = os.environ.get(RESULTS_ENV)
    if env:
        return Path(env)
    return REPO / "results" / "scratch" / "default"


@functools.lru_cache(maxsize=1)
def _git_commit() -> str | None:
    """Short commit of the repository the library runs from, or None outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def check_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``meta``: it must name the ``profile`` and the ``data`` (a description such as
    "CIFAR-10 (JPEG) stand-in") as non-empty strings; other keys are kept as they are."""
    if not isinstance(meta, Mapping):
        raise ValueError(f"meta must be a dict with 'profile' and 'data', got {type(meta).__name__}")
    for key in ("profile", "data"):
        value = meta.get(key)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(
                f"meta[{key!r}] must be a non-empty string (every result names its profile and data set), got {value!r}"
            )
    return dict(meta)


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or name.endswith(".meta"):
        raise ValueError(
            f"result name must be a plain file stem of letters, digits, '_', '-' or '.', got {name!r}"
        )
    return name


def caption(meta: Mapping[str, Any], title: str | None = None) -> str:
    """One caption line: ``"<title> — profile: smoke · data: synthetic (smoke)"``."""
    meta = check_meta(meta)
    tail = f"profile: {meta['profile']} · data: {meta['data']}"
    return f"{title} — {tail}" if title else tail


def _sidecar(kind: str, name: str, files: list[str], meta: dict[str, Any], title: str | None) -> dict[str, Any]:
    extra = {k: v for k, v in meta.items() if k not in ("profile", "data")}
    return {
        "kind": kind,
        "name": name,
        "title": title,
        "caption": caption(meta, title),
        "profile": meta["profile"],
        "data": meta["data"],
        "files": files,
        "library_version": __version__,
        "git_commit": _git_commit(),
        **({"extra": extra} if extra else {}),
    }


def save_table(
    df,
    name: str,
    *,
    meta: Mapping[str, Any],
    title: str | None = None,
    root: str | os.PathLike | None = None,
    index: bool | None = None,
) -> dict[str, Path]:
    """Write ``df`` as ``tables/<name>.csv`` + ``.md`` (caption line, then the Markdown table) + ``.meta.json``.

    ``index=None`` keeps the index only when it carries information (named or not a plain range). The
    CSV holds the raw values; the Markdown table is formatted for reading by ``report.formatting`` (digits per
    quantity and one precision per column there; there is no per-call ``floatfmt``: one style everywhere).
    Returns the written paths by kind (``csv``, ``md``, ``meta``).
    """
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"save_table needs a pandas DataFrame, got {type(df).__name__}")
    name, meta = _check_name(name), check_meta(meta)
    if index is None:
        index = not (isinstance(df.index, pd.RangeIndex) and df.index.name is None)
    folder = results_root(root) / "tables"
    paths = {"csv": folder / f"{name}.csv", "md": folder / f"{name}.md", "meta": folder / f"{name}.meta.json"}
    atomic_write_text(paths["csv"], df.to_csv(index=index, lineterminator="\n"))
    heading = f"**{title}**\n\n" if title else ""
    # The Markdown copy is for reading (results_format: digits per quantity, separators, units, "—").
    md = f"{heading}_{caption(meta)}_\n\n{table_markdown(df if index else df.reset_index(drop=True))}\n"
    atomic_write_text(paths["md"], md)
    atomic_write_json(paths["meta"], _sidecar("table", name, [paths["csv"].name, paths["md"].name], meta, title))
    log.info("table %s -> %s", name, folder)
    return paths


# Fixed figure style: one theme, sizes and resolution for every figure of the companion.
_STYLE_RC = {
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "figure.figsize": (6.4, 4.0),
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "svg.hashsalt": _SVG_HASHSALT,
    "svg.fonttype": "path",  # text as paths: the SVG renders the same without our fonts installed
    "path.simplify": True,
}


def apply_style() -> None:
    """Set the companion's figure style (seaborn ``whitegrid`` theme, fixed sizes, dpi and SVG salt)."""
    import matplotlib as mpl
    import seaborn as sns

    sns.set_theme(context="paper", style="whitegrid", palette="colorblind")
    mpl.rcParams.update(_STYLE_RC)


def save_figure(
    fig,
    name: str,
    *,
    meta: Mapping[str, Any],
    title: str | None = None,
    root: str | os.PathLike | None = None,
    stamp: bool = True,
) -> dict[str, Path]:
    """Write ``fig`` as ``figures/<name>.png`` + ``.svg`` + ``.meta.json``.

    ``stamp=True`` writes the caption (profile and data set) into the figure itself, below the axes,
    so a PNG that travels alone still says what produced it. Files carry no date, and the SVG ids
    come from a fixed salt, so a rerun writes identical bytes.
    """
    import matplotlib as mpl
    from matplotlib.figure import Figure

    if not isinstance(fig, Figure):
        raise ValueError(f"save_figure needs a matplotlib Figure, got {type(fig).__name__}")
    name, meta = _check_name(name), check_meta(meta)
    folder = results_root(root) / "figures"
    paths = {"png": folder / f"{name}.png", "svg": folder / f"{name}.svg", "meta": folder / f"{name}.meta.json"}
    if stamp and not getattr(fig, "_micronet_stamped", False):
        fig.text(0.01, -0.01, caption(meta, title), ha="left", va="top", fontsize=8, color="0.35")
        fig._micronet_stamped = True
    with mpl.rc_context({"svg.hashsalt": _SVG_HASHSALT}):
        for kind, metadata in (("png", {"Software": None}), ("svg", {"Date": None, "Creator": None})):
            buf = io.BytesIO()
            fig.savefig(buf, format=kind, bbox_inches="tight", metadata=metadata)
            atomic_write_bytes(paths[kind], buf.getvalue())
    atomic_write_json(paths["meta"], _sidecar("figure", name, [paths["png"].name, paths["svg"].name], meta, title))
    log.info("figure %s -> %s", name, folder)
    return paths


def save(obj, name: str, *, meta: Mapping[str, Any], **kwargs) -> dict[str, Path]:
    """``save_table`` for a DataFrame, ``save_figure`` for a Figure."""
    import pandas as pd

    if isinstance(obj, pd.DataFrame):
        return save_table(obj, name, meta=meta, **kwargs)
    return save_figure(obj, name, meta=meta, **kwargs)


def img_html(png: bytes, alt: str) -> str:
    """PNG bytes as an inline ``<img>`` with alt text, for display in a notebook: nbconvert's lab template
    drops an ``IPython.display.Image``'s alt and then warns "Alternative text is missing" on every report."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}" style="max-width:100%">'


def publish(obj, name: str, *, meta: Mapping[str, Any], title: str | None = None, **kwargs) -> None:
    """Save ``obj`` (see ``save``) and display it in the running notebook under its caption.

    A notebook's tables and figures are then one call each; outside IPython this only saves. Returns
    nothing, so a cell ending in ``publish(...)`` shows the result, not the (machine-specific) file
    paths; call ``save`` for those.
    """
    written = save(obj, name, meta=meta, title=title, **kwargs)
    from matplotlib.figure import Figure

    if isinstance(obj, Figure):

        for problem in figure_problems(obj):  # what would mislead a reader, said in the report (issue #32)
            note(f"Figure {name}: {problem}.")
    try:
        from IPython import get_ipython
        from IPython.display import HTML, Markdown, display
    except ImportError:  # pragma: no cover - IPython ships with the notebook extras
        return None
    if get_ipython() is None:
        return None
    display(Markdown(f"**{name}** — {caption(meta, title)}"))
    from matplotlib.figure import Figure

    if isinstance(obj, Figure):
        # Show the saved PNG itself: a Figure built without pyplot has no inline-backend formatter
        # (it would render as "<Figure size …>"), and the report then shows exactly the committed file.
        display({"text/html": img_html(Path(written["png"]).read_bytes(), caption(meta, title)),
                 "text/plain": caption(meta, title)}, raw=True)
        import matplotlib.pyplot as plt

        plt.close(obj)  # shown once, by the display above, not again by the inline backend
    else:
        # Formatted for reading (results_format); the report lives in <set>/html/, its CSV in <set>/tables/.
        display(HTML(table_html(obj, csv_href=f"../tables/{Path(written['csv']).name}")))
    return None



# Set by ``micronet reproduce`` for its kernels: the set's final folder (the kernel writes into its
# staging copy, ``$MICRONET_RESULTS``) and whether it is the committed set.
DEST_ENV = "MICRONET_RESULTS_DEST"
KIND_ENV = "MICRONET_RESULTS_KIND"
_ANNOUNCED = "scratch set, git-ignored; interactive run"


@dataclass(frozen=True)
class OutputsInfo:
    """Where a notebook's outputs go: ``folder`` (written now), ``shown`` (the set's folder as reports
    name it), ``kind`` (committed / scratch / chosen by the environment) and the active profile and data."""

    folder: Path
    shown: str
    kind: str
    profile: str
    data: str

    @property
    def line(self) -> str:
        return (f"Outputs of this notebook go to `{self.shown}/` ({self.kind}) · profile **{self.profile}** · "
                f"data `{self.data}`")


def announce(params: Mapping[str, Any]) -> OutputsInfo:
    """Say where this notebook's tables, figures and training runs go, and which profile is active.

    Called from every notebook's check cell. Under ``micronet reproduce`` the environment names the set
    being built. Run interactively (Jupyter, nbclient) with no ``$MICRONET_RESULTS``, the notebook
    writes the git-ignored scratch set of its profile and data: this sets ``$MICRONET_RESULTS`` and
    ``$MICRONET_RUNS`` of the kernel to it, so ``publish`` and ``train.run_or_load`` follow, and holds that
    set's lock until the kernel ends (``set_writers.hold_for_process``; in IPython only). In a notebook,
    Python warnings from then on are shown as notes of the report (``note``).
    """

    profile, data = params["profile"], params["data"]
    env = os.environ.get(RESULTS_ENV)
    chosen_here = os.environ.get(KIND_ENV) == _ANNOUNCED  # by an earlier call in this kernel: follow the new params
    if env and not chosen_here:
        folder = Path(env)
        shown = os.environ.get(DEST_ENV) or relative_to_repo(folder)
        kind = os.environ.get(KIND_ENV) or "chosen by $MICRONET_RESULTS"
    else:
        target = results_set(profile, data)
        if _in_kernel():  # a reproduce or sweep of this set and this kernel never write it at once

            hold_for_process(target)
        folder, shown = target.folder, relative_to_repo(target.folder)
        if chosen_here or not os.environ.get(RUNS_ENV):
            os.environ[RUNS_ENV] = str(folder / "runs")
        os.environ[RESULTS_ENV] = str(folder)
        os.environ[KIND_ENV] = _ANNOUNCED
        kind = _ANNOUNCED
    info = OutputsInfo(folder=folder, shown=shown, kind=kind, profile=profile, data=data)
    log.info("%s", info.line)
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display
    except ImportError:  # pragma: no cover
        return info
    if get_ipython() is not None:
        display(Markdown(info.line))
        warnings.showwarning = _warning_as_note
    return info


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return False
    return get_ipython() is not None


def _warning_as_note(message, category, filename, lineno, file=None, line=None) -> None:
    """Python warnings raised while a notebook runs become the report's notes (issue #11, item 9), not
    stderr text a reader of the HTML report would take for a failure. ``warnings`` filters still apply."""
    note(f"{category.__name__}: {message}")
