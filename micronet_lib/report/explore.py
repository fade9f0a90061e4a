"""Explorers: small ipywidgets views where a reader would rather play than read (issue #12).

Each explorer is one function taking what the notebook already has (models, images, a dataset) and
returning nothing. In a live JupyterLab kernel (``progress.interactive()``) it shows ipywidgets
controls through ``ipywidgets.interact`` and redraws a table and a figure when a control moves; in a
headless report run it draws the same view once, for its default settings, as a static table and PNG,
so the HTML report shows what the explorer shows. Nothing is written to disk.

- ``count_explorer`` (01): a model and a counting convention → per-layer counts and where the ops go.
- ``similarity_explorer`` (02): a classifier and a CIFAR-100 class → that row of the similarity matrix S.
- ``augmentation_explorer`` (03): an augmentation pipeline and a seed → a grid of augmented images;
  ``sample_images`` finds real images for it (CIFAR-100 samples, CIFAR-10 JPEGs) when the machine has them.
- ``oneshot_explorer`` (04): a one-shot global pruning rate → score terms, accuracy when a CIFAR-100
  dataset is given, and the sparsity of every layer group.
"""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pandas as pd
import torch
import torch.nn as nn

from micronet_lib.progress import interactive
from micronet_lib.augment import augmentation_gallery
from micronet_lib.data import data_root, find_image_folder, first_per_class, is_image, read_images
from micronet_lib.experiments import CIFAR100_CLASSES, oneshot_curve, similarity_by_superclass
from micronet_lib.pruning import group_table, oneshot_prune
from micronet_lib.report.formatting import table_html
from micronet_lib.report.results import img_html
from micronet_lib.scoring import count

__all__ = [
    "count_explorer",
    "similarity_explorer",
    "sample_images",
    "augmentation_explorer",
    "oneshot_explorer",
]

SCORE_COLUMNS = ("params_s", "ops_s", "params_term", "ops_term", "score")


def _display(*objs: Any) -> None:
    """Show tables and figures in the running notebook (figures as PNG, whatever the backend; tables through the
    reports' formatter, ``formatting.table_html``, as every published table); no-op outside IPython."""
    import pandas as pd
    from IPython import get_ipython
    from IPython.display import HTML, display
    from matplotlib.figure import Figure

    if get_ipython() is None:
        return
    for obj in objs:
        if isinstance(obj, Figure):
            buf = io.BytesIO()
            obj.savefig(buf, format="png", bbox_inches="tight", metadata={"Software": None})
            alt = obj.get_suptitle() or "explorer view"
            display({"text/html": img_html(buf.getvalue(), alt), "text/plain": alt}, raw=True)
        elif isinstance(obj, pd.DataFrame):
            display(HTML(table_html(obj)))
        else:
            display(obj)


def _explore(view: Callable[..., None], controls: Mapping[str, Any], static: Mapping[str, Any]) -> None:
    """Live: ``ipywidgets.interact(view, **controls)``; headless: ``view(**static)`` once, for the report."""
    if interactive():
        import ipywidgets

        ipywidgets.interact(view, **controls)
    else:
        view(**static)


def _dropdown(options: Sequence[Any], value: Any, description: str):
    import ipywidgets

    return ipywidgets.Dropdown(options=list(options), value=value, description=description,
                               style={"description_width": "initial"})


def _check_choice(what: str, value: Any, options: Sequence[Any]) -> None:
    if value not in options:
        raise ValueError(f"{what}={value!r} is not available; choose one of {', '.join(map(repr, options))}")


# --------------------------------------------------------------------------- 01: counts per layer


def count_explorer(models: Mapping[str, nn.Module], *, conventions: Sequence[str] = ("kaist", "official"),
                   model: str | None = None, convention: str = "kaist", rows: int = 12) -> None:
    """Pick a model and a counting convention; see its per-layer counts and where the ops go.

    ``models``: name → model (dense MicroNets, released checkpoints). The view shows the score terms,
    the ``rows`` layers with the most operations (``scoring.count``'s per-op table) and a bar chart of
    parameters and operations (adds + mults, raw counts) per op group. ``model`` / ``convention``: the
    initial choice, and the one drawn in a headless report (default: the first model, "kaist").
    """
    from matplotlib.figure import Figure

    names = list(models)
    if not names:
        raise ValueError("count_explorer needs at least one model, e.g. {'micronet_v2': build_model('micronet_v2')}")
    model = names[0] if model is None else model
    _check_choice("model", model, names)
    _check_choice("convention", convention, list(conventions))
    reports: dict[tuple[str, str], Any] = {}

    def view(model: str, convention: str) -> None:
        if (model, convention) not in reports:
            reports[(model, convention)] = count(models[model], convention=convention)
        rep = reports[(model, convention)]
        summary = pd.DataFrame([{k: rep.summary[k] for k in SCORE_COLUMNS}], index=[f"{model} ({convention})"])
        layers = rep.table.assign(ops=rep.table["adds"] + rep.table["mults"])
        top = layers.nlargest(rows, "ops")[["path", "op", "group", "params", "mults", "adds", "params_s", "ops_s"]]
        groups = rep.by_group().assign(ops=lambda d: d["adds"] + d["mults"])
        groups = groups[(groups["params"] > 0) | (groups["ops"] > 0)].sort_values("ops")
        fig = Figure(figsize=(10, 0.3 * len(groups) + 1.6), layout="constrained")
        axes = fig.subplots(1, 2, sharey=True)
        for ax, col, label in ((axes[0], "params", "parameters"), (axes[1], "ops", "operations (adds + mults)")):
            share = groups[col] / groups[col].sum() * 100
            ax.barh(groups.index, share, color="C0" if col == "params" else "C1")
            ax.set_xlabel(f"share of {label} (%)")
        fig.suptitle(f"{model}, '{convention}' count: score {rep.summary['score']:.5f}")
        _display(summary, top.reset_index(drop=True), fig)

    _explore(view, dict(model=_dropdown(names, model, "model"), convention=_dropdown(conventions, convention, "convention")),
             dict(model=model, convention=convention))


# --------------------------------------------------------------------------- 02: similarity rows


def similarity_explorer(classifiers: Mapping[str, torch.Tensor], *, checkpoint: str | None = None,
                        cls: str = "maple_tree", k: int = 12) -> None:
    """Pick a released classifier and a CIFAR-100 class; see the ``k`` classes it is most similar to.

    ``classifiers``: name → classifier weight [100, D] (``model.linear.weight``). The bars are row
    ``cls`` of S (``experiments.similarity_by_superclass``, docs/method.md §6.2): the share of weighted label
    smoothing's ε that class ``cls`` gives each other class; classes of the same superclass are
    coloured, and the dashed line is uniform smoothing's 1/99.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    names = list(classifiers)
    if not names:
        raise ValueError("similarity_explorer needs at least one classifier weight, e.g. {'v2': model.linear.weight}")
    checkpoint = names[0] if checkpoint is None else checkpoint
    _check_choice("checkpoint", checkpoint, names)
    _check_choice("cls", cls, CIFAR100_CLASSES)
    matrices: dict[str, pd.DataFrame] = {}

    def view(checkpoint: str, cls: str) -> None:
        if checkpoint not in matrices:
            matrices[checkpoint] = similarity_by_superclass(classifiers[checkpoint].detach().cpu())
        s = matrices[checkpoint]
        superclass = dict(zip(s.index, s.attrs["superclass"]))
        row = s.loc[cls].drop(cls).nlargest(k)
        same = [superclass[c] == superclass[cls] for c in row.index]
        fig = Figure(figsize=(8, 0.28 * k + 1.4), layout="constrained")
        ax = fig.subplots()
        ax.barh(row.index[::-1], row.values[::-1], color=["C2" if m else "C7" for m in same[::-1]])
        uniform = ax.axvline(1 / 99, color="0.3", ls="--", lw=0.8)
        ax.set_xlabel(f"S[{cls}, j]: share of ε given to class j")
        ax.set_title(f"{checkpoint}: the {k} classes most similar to '{cls}'")
        ax.legend([uniform, Patch(color="C2"), Patch(color="C7")],
                  ["uniform smoothing (1/99)", f"same superclass ({superclass[cls]})", "other superclasses"],
                  fontsize=8, loc="lower right")
        table = pd.DataFrame({"S": row.values, "superclass": [superclass[c] for c in row.index]}, index=row.index)
        _display(fig, table)

    _explore(view, dict(checkpoint=_dropdown(names, checkpoint, "checkpoint"),
                        cls=_dropdown(sorted(CIFAR100_CLASSES), cls, "class")),
             dict(checkpoint=checkpoint, cls=cls))


# --------------------------------------------------------------------------- 03: augmentation grid


def sample_images(n: int = 8) -> tuple[torch.Tensor, str] | None:
    """Up to ``n`` real photographs as uint8 [N, 3, 32, 32] and where they come from, or None.

    Looked up under ``$MICRONET_IMAGEFOLDER_ROOT`` and the data folder: the CIFAR-100 test samples
    (``cifar100-samples/*.png``) first, else the first test image of each class of the CIFAR-10 JPEG
    tree (``cifar10-jpeg/test/<class>/``). None when neither is on this machine (use the run's images).
    """
    if n < 1:
        raise ValueError(f"n={n!r} must be >= 1")
    samples_folder = find_image_folder("cifar100-samples", also_under=[data_root()])
    samples = sorted(p for p in samples_folder.iterdir() if is_image(p)) if samples_folder else []
    source = "CIFAR-100 test samples"
    if not samples and (tree := find_image_folder(Path("cifar10-jpeg", "test"), also_under=[data_root()])):
        samples, source = first_per_class(tree, n, per_class=1), "CIFAR-10 test images (JPEG)"
    if not samples:
        return None
    images = read_images(samples[:n])
    return (images, source) if images.shape[-2:] == (32, 32) else None


def augmentation_explorer(images_uint8: torch.Tensor, pipelines: Sequence[str], *, pipeline: str | None = None,
                          seed: int = 0, n: int = 8, source: str = "") -> None:
    """Pick an augmentation pipeline and a seed; see a grid of ``n`` images through it, four draws each.

    ``images_uint8``: uint8 [N, 3, H, W] (``sample_images()`` or the run's test images); ``pipelines``:
    ``augment.build_pipeline`` names. Row 1 holds the originals, rows 2–5 four augmented draws
    (``augment.augmentation_gallery``); another seed gives other draws.
    """
    names = list(dict.fromkeys(pipelines))
    if not names:
        raise ValueError("augmentation_explorer needs at least one pipeline name, e.g. ['baseline', 'fastaa']")
    pipeline = names[0] if pipeline is None else pipeline
    _check_choice("pipeline", pipeline, names)
    n = min(n, images_uint8.shape[0])

    def view(pipeline: str, seed: int) -> None:
        fig = augmentation_gallery(images_uint8, [pipeline] * 4, n=n, seed=seed)
        for ax, label in zip(fig.axes[n::n], ("draw 1", "draw 2", "draw 3", "draw 4")):
            ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
        fig.suptitle(f"{pipeline}, seed {seed}" + (f" — {source}" if source else ""))
        _display(fig)

    import ipywidgets

    _explore(view, dict(pipeline=_dropdown(names, pipeline, "pipeline"),
                        seed=ipywidgets.IntSlider(value=seed, min=0, max=99, description="seed", continuous_update=False)),
             dict(pipeline=pipeline, seed=seed))


# --------------------------------------------------------------------------- 04: one-shot pruning rate


def oneshot_explorer(model: nn.Module, *, name: str = "model", rate: float = 60.0, dataset: Any = None,
                     eval_images: int | None = None, recal_images: int = 2560, device: str = "cpu",
                     curve: pd.DataFrame | None = None) -> None:
    """Move a one-shot global pruning rate; see the score terms, accuracy, and the sparsity per layer group.

    ``model`` is pruned (a copy; global magnitude, its own masks kept, ``pruning.oneshot_prune``) to the
    slider's rate and scored in both conventions (``experiments.oneshot_curve``); with a CIFAR-100
    ``dataset`` also its test top-1 on ``eval_images`` images, without and with BN recalibration on
    ``recal_images`` training images (slower: seconds per move on a CPU). ``curve``: rows of an
    ``oneshot_curve`` already computed for the same model and data, drawn beside the chosen rate.
    """
    from matplotlib.figure import Figure

    if not 0 <= rate < 100:
        raise ValueError(f"rate={rate!r} must lie in [0, 100)")
    seen: dict[float, pd.DataFrame] = {} if curve is None else {float(r): curve[curve["rate"] == r] for r in curve["rate"]}

    def view(rate: float) -> None:
        if rate not in seen:
            seen[rate] = oneshot_curve(model, [rate], dataset=dataset, eval_images=eval_images,
                                       recal_images=recal_images, device=device)
        row = seen[rate].set_index("rate")
        groups = group_table(oneshot_prune(copy.deepcopy(model), float(rate)), total=False)["sparsity"] * 100
        fig = Figure(figsize=(9, 3.4), layout="constrained")
        left, right = fig.subplots(1, 2, width_ratios=(3, 2))
        left.bar(groups.index, groups.values, color="C3")
        left.set_ylim(0, 100)
        left.set_ylabel("sparsity (%)")
        left.tick_params(axis="x", rotation=45)
        left.set_title(f"{name} pruned one-shot to {rate:g} %")
        visited = pd.concat(seen.values()).sort_values("rate")
        right.plot(visited["rate"], visited["score_kaist"], "o-", color="0.6", ms=4, label="rates tried")
        right.plot([rate], row["score_kaist"], "o", color="C3", ms=8, label=f"{rate:g} %")
        right.set_xlabel("pruning rate (%)")
        right.set_ylabel("score, 'kaist' (lower is better)")
        right.legend(fontsize=8)
        _display(row, fig)

    import ipywidgets

    _explore(view, dict(rate=ipywidgets.FloatSlider(value=rate, min=0, max=95, step=5, description="rate (%)",
                                                    continuous_update=False)),
             dict(rate=rate))
