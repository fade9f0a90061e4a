"""A grid of augmented examples per pipeline, for the notebooks (docs/method.md §7)."""

from __future__ import annotations

from typing import Sequence

import torch
from matplotlib.figure import Figure

from micronet_lib.augment.pipelines import build_pipeline

__all__ = ["augmentation_gallery"]


def augmentation_gallery(
    images_uint8: torch.Tensor, pipelines: Sequence[str], *, n: int = 8, seed: int = 0, copy: int = 0,
    labels: Sequence[str] | None = None,
) -> Figure:
    """One row of ``n`` images per pipeline (first row: the originals), same images in every row.

    Pipelines are built with mean 0 and std 1, so their output is the augmented image in [0, 1].
    ``copy`` picks the epoch copy where a pipeline has several (``fastaa4x``), clamped to its range.
    ``labels`` names the rows (default: the pipeline names; a policy file's path makes a poor row label).
    """
    if images_uint8.dtype != torch.uint8 or images_uint8.ndim != 4 or images_uint8.shape[1] != 3:
        raise ValueError(f"images_uint8 must be uint8 [N, 3, H, W], got {images_uint8.dtype} {tuple(images_uint8.shape)}")
    if not 1 <= n <= images_uint8.shape[0]:
        raise ValueError(f"n={n!r} must lie in [1, {images_uint8.shape[0]}] (the number of images given)")
    if not pipelines:
        raise ValueError("pipelines is empty; name at least one, e.g. ['baseline', 'fastaa4x']")
    labels = list(pipelines if labels is None else labels)
    if len(labels) != len(pipelines):
        raise ValueError(f"labels has {len(labels)} entries for {len(pipelines)} pipelines; give one label per pipeline")
    built = [build_pipeline(name, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)) for name in pipelines]
    images = images_uint8[:n].cpu()
    rows = [("original", images.float() / 255.0)]
    for label, pipe in zip(labels, built):
        gen = torch.Generator().manual_seed(seed)
        rows.append((label, pipe(images, copy=min(copy, pipe.copies_per_epoch - 1), generator=gen)))
    fig = Figure(figsize=(1.2 * n + 1.4, 1.25 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), n, squeeze=False)
    for r, (label, batch) in enumerate(rows):
        for c in range(n):
            ax = axes[r][c]
            ax.imshow(batch[c].clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    return fig
