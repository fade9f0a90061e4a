"""The reports' figures that can be got wrong, built by the library so tests can inspect them (issue #32).

Each builder returns a ``matplotlib.figure.Figure`` (no pyplot state); ``figure_problems`` lists what a
reader would be misled by and can be checked on the Figure object: bars on a log axis (bar length then
means nothing), legend entries with the same label or with look-alike colours and the same line style.
``results.publish`` shows those problems as a note of the report; the tests assert there are none.

- ``leaderboard_figure``: published scores as dots on a log axis (not bars), the released checkpoints
  recomputed beside them; its caption's data label is ``LEADERBOARD_DATA`` (published scores, counts), not
  the run's training data.
- ``ablation_curves_figure``: validation cross-entropy (one objective for every cell: the training loss of
  label smoothing is another function) and validation top-1, one distinct colour per loss.
- ``per_block_figure``: parameters and ops per block in network order (stem, blocks, head).
- ``grid_heatmap``: a search grid whose colour scale spans at least the 95 % interval, so differences
  within the noise do not look like the whole colour range.
"""

from __future__ import annotations

import itertools
import re
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.colors import to_rgb
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

__all__ = ["DISTINCT_COLOURS", "MIN_COLOUR_DISTANCE", "LEADERBOARD_DATA", "colour_distance", "distinct_colours",
           "figure_problems", "leaderboard_figure", "ablation_curves_figure", "block_order", "per_block_figure",
           "grid_heatmap"]

# Pairwise at least MIN_COLOUR_DISTANCE apart (CIE76 ΔE): no two cells of a figure in look-alike colours.
DISTINCT_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#7B3294", "#000000", "#8C510A", "#CC79A7", "#999999")
MIN_COLOUR_DISTANCE = 36.0
LEADERBOARD_DATA = "published scores; released checkpoints counted (no images)"


def _lab(colour: Any) -> np.ndarray:
    rgb = np.array(to_rgb(colour))
    rgb = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ rgb
    f = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(f > 0.008856, np.cbrt(f), 7.787 * f + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def colour_distance(a: Any, b: Any) -> float:
    """CIE76 ΔE between two matplotlib colours (about 2.3 is just noticeable; the palette keeps ≥ 36)."""
    return float(np.linalg.norm(_lab(a) - _lab(b)))


def distinct_colours(labels: Iterable[Any]) -> dict[Any, str]:
    """One colour of ``DISTINCT_COLOURS`` per label, in order; more labels than colours is an error."""
    labels = list(dict.fromkeys(labels))
    if len(labels) > len(DISTINCT_COLOURS):
        raise ValueError(f"{len(labels)} labels but only {len(DISTINCT_COLOURS)} distinct colours; split the figure")
    return dict(zip(labels, DISTINCT_COLOURS))


def _handle_style(handle: Any) -> tuple[Any, str, str] | None:
    """(colour, line style, marker) of a legend handle; None for an invisible one (a seaborn section title)."""
    if hasattr(handle, "get_visible") and not handle.get_visible():
        return None
    getters = [getattr(handle, name, None) for name in ("get_color", "get_facecolor", "get_edgecolor")]
    colour = next((g() for g in getters if g is not None), None)
    if colour is None:
        return None
    colour = np.atleast_2d(np.asarray(colour, dtype=object))[0] if not isinstance(colour, str) else colour
    try:
        colour = to_rgb(tuple(colour) if not isinstance(colour, str) else colour)
    except (ValueError, TypeError):
        return None
    style = str(getattr(handle, "get_linestyle", lambda: "")())
    marker = str(getattr(handle, "get_marker", lambda: "")())
    width = getattr(handle, "get_linewidth", lambda: 1)()
    if (style in ("None", "", " ") or not width) and marker in ("None", "", " ") and not hasattr(handle, "get_facecolor"):
        return None
    return colour, style, marker


def figure_problems(fig: Figure) -> list[str]:
    """What misleads in ``fig``: bars on a non-linear axis, duplicate legend labels, legend entries in
    look-alike colours (ΔE < ``MIN_COLOUR_DISTANCE``) with the same line style and marker."""
    problems = []
    for i, ax in enumerate(fig.axes):
        for container in ax.containers:
            if isinstance(container, BarContainer):
                horizontal = getattr(container, "orientation", None) == "horizontal"
                scale = ax.get_xscale() if horizontal else ax.get_yscale()
                if scale != "linear":
                    problems.append(f"axes {i}: bars on a {scale} axis (their length means nothing); draw points")
    for legend in [ax.get_legend() for ax in fig.axes] + list(fig.legends):
        if legend is None:
            continue
        labels = [t.get_text() for t in legend.get_texts()]
        repeated = sorted({x for x in labels if x and labels.count(x) > 1})
        if repeated:
            problems.append(f"legend repeats {repeated}")
        entries = [(label, _handle_style(h)) for label, h in zip(labels, legend.legend_handles)]
        entries = [(label, s) for label, s in entries if s is not None]
        for (la, a), (lb, b) in itertools.combinations(entries, 2):
            if a[1:] == b[1:] and colour_distance(a[0], b[0]) < MIN_COLOUR_DISTANCE:
                problems.append(f"legend entries {la!r} and {lb!r} look alike (ΔE {colour_distance(a[0], b[0]):.0f})")
    return problems


def leaderboard_figure(published: Sequence[tuple[str, float]], recomputed: Mapping[str, float]) -> Figure:
    """The challenge's top entries (``published``: (team, score), best first) as dots on a log score axis, and
    the released checkpoints recomputed (``recomputed``: name → score; ``…v1…`` on ver1's row, others on ver2's)."""
    fig = Figure(figsize=(9.5, 4.5))
    ax = fig.subplots()
    labels = [f"{i + 1}. {name}" for i, (name, _) in enumerate(published)]
    y = np.arange(len(published))
    ax.hlines(y, 0, 1, transform=ax.get_yaxis_transform(), color="0.9", lw=0.8, zorder=0)  # row guides
    ax.plot([s for _, s in published], y, "o", color="0.45", ms=7, label="leaderboard (published)")
    rows = {version: i for i, (name, _) in enumerate(published) for version in ("v1", "v2")
            if f"ver{version[1]}" in name}  # "KAIST AI (ver1)" is the row of the v1 checkpoints
    shown = False
    for name, score in recomputed.items():
        row = rows.get("v1" if "v1" in name else "v2")
        if row is not None:
            ax.plot([score], [row], "x", color=DISTINCT_COLOURS[0], ms=8, mew=2,
                    label=None if shown else "released checkpoints, recomputed ('kaist'; ver2 row: pr_60, 45, 30, 15)")
            shown = True
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xscale("log")
    scores = [s for _, s in published] + list(recomputed.values())
    ticks = [t for t in (0.003, 0.004, 0.005, 0.006, 0.008, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1, 2)
             if min(scores) / 1.15 <= t <= max(scores) * 1.15]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])  # 0.006, not 6 × 10⁻³
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("score (lower is better, log scale)")
    ax.legend(loc="lower left", fontsize=8)  # the lower left of the board is empty: better scores rank higher
    fig.tight_layout()
    return fig


def ablation_curves_figure(curves: pd.DataFrame, *, accuracy: str, seeds: int) -> Figure:
    """Per-epoch validation cross-entropy and ``accuracy`` (e.g. ``val_top1``) of every ablation cell: colour
    = loss, line style = orthogonality; mean ± sd over seeds when there are several."""
    import seaborn as sns

    curves = curves.copy()
    curves["orthogonality"] = curves["label"].str.endswith("+ ortho").map({True: "on", False: "off"})
    curves["loss kind"] = curves["label"].str.replace(" + ortho", "", regex=False)
    palette = distinct_colours(curves["loss kind"])
    split = accuracy.split("_")[0]
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    panels = ((axes[0], f"{split}_loss", f"{split} cross-entropy (the same objective for every cell)"),
              (axes[1], accuracy, accuracy.replace("_", " ") + " (%)"))
    for ax, column, label in panels:
        sns.lineplot(data=curves, x="global_epoch", y=column, hue="loss kind", style="orthogonality", palette=palette,
                     errorbar="sd" if seeds > 1 else None, marker="o", ax=ax, legend=ax is axes[1])
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.xaxis.set_major_locator(_integer_locator())
    axes[1].legend(fontsize=8, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    return fig


def _integer_locator():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def block_order(names: Iterable[str]) -> list[str]:
    """Block names in network order: the stem, ``block NN`` by number, then the head (and anything else)."""
    def key(name: str) -> tuple[int, int, str]:
        if name == "stem":
            return (0, 0, name)
        match = re.fullmatch(r"block (\d+)", name)
        return (1, int(match.group(1)), name) if match else (2, 0, name)

    return sorted(dict.fromkeys(names), key=key)


def per_block_figure(per_block: Mapping[str, pd.DataFrame]) -> Figure:
    """Parameters and ops per block, one bar group per block in network order, one colour per model
    (``per_block``: model → frame indexed by block name with ``params`` and ``ops`` columns)."""
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    order = block_order(itertools.chain.from_iterable(f.index for f in per_block.values()))
    colours = distinct_colours(per_block)
    width = 0.8 / max(1, len(per_block))
    x = np.arange(len(order))
    for ax, column, label in ((axes[0], "params", "parameters (values)"), (axes[1], "ops", "ops = adds + mults/2 (freebie)")):
        for j, (name, frame) in enumerate(per_block.items()):
            values = frame[column].reindex(order).fillna(0)
            ax.bar(x + j * width, values.values, width, label=name, color=colours[name])
        ax.set_xticks(x + 0.4 - width / 2, order, rotation=90)
        ax.set_ylabel(label)
        ax.set_title(f"{label} per block ('kaist')")
    axes[0].legend()
    fig.tight_layout()
    return fig


def grid_heatmap(means: pd.DataFrame, *, half_width: float | None, label: str, title: str) -> Figure:
    """A search grid (rows × columns of mean scores) whose colour scale is centred on the grid's mean and spans
    at least ± ``half_width`` (the cells' 95 % interval half-width): two settings one point apart, within the
    noise, then look alike instead of taking the two ends of the colour map."""
    import seaborn as sns

    values = means.to_numpy(dtype=float)
    centre = float(np.nanmean(values))
    spread = float(np.nanmax(np.abs(values - centre))) if np.isfinite(values).any() else 0.0
    span = max(spread, half_width or 0.0, 0.5)
    fig = Figure(figsize=(1.6 + 1.1 * means.shape[1], 1.4 + 0.9 * means.shape[0]))
    ax = fig.subplots()
    sns.heatmap(means, annot=True, fmt=".1f", cmap="vlag", vmin=centre - span, vmax=centre + span,
                cbar_kws=dict(label=label), ax=ax)
    ax.set_title(title)
    fig.tight_layout()
    return fig
