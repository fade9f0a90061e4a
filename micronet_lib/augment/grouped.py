"""FastAA applied op by op to every image that drew it: one call per (op, magnitude) instead of per image.

The per-image loop of :class:`~micronet_lib.augment.fastaa.FastAAStage` launches a few kernels per image
(256 images a batch with the 4x epoch's two ops each); on a GPU each launch costs more than the pixels it
moves. Here the draws are the same, made first by the stage; then for slot 0 and then slot 1, the images
whose op fired are grouped by (op, signed magnitude) and each group is transformed in one batched call.
Each image still sees its first op and then its second, so the result equals the loop bit for bit
(tests/test_augment_grouped.py, against the loop and against PIL):

- geometric ops: the cached source-index map of :mod:`.ops` as one gather over the group;
- Contrast, AutoContrast: PIL's per-image grey mean / per-channel range computed for the whole group,
  in the same float64 arithmetic as the per-image code;
- Cutout: each image's box (its own centre) as one mask over the group;
- the others: the per-image kernel already takes a batch [N, C, H, W].

Used on CUDA tensors by default (``FastAAStage(grouped=None)``); on a CPU the per-image loop stays the
default, as grouping was not found faster there.
"""

from __future__ import annotations

import torch

from micronet_lib.augment.ops import OPS, _cutout_fill, _geometric_index, _pil_blend, _pil_grey, cutout_box

__all__ = ["apply_op_batch", "apply_grouped"]


def _geometric(images: torch.Tensor, name: str, v: float) -> torch.Tensor:
    n, c, h, w = images.shape
    index, uncovered = _geometric_index(name, float(v), h, w)
    out = images.reshape(n, c, h * w).index_select(2, index.to(images.device))
    return out.masked_fill_(uncovered.to(images.device), 0).reshape(n, c, h, w)


def _contrast(images: torch.Tensor, v: float) -> torch.Tensor:
    grey = _pil_grey(images)  # [N, 1, H, W] integers
    # int(sum / count + 0.5) per image, in float64 as the per-image code's Python floats
    mean = grey.sum(dim=(1, 2, 3), dtype=torch.float64) / grey[0].numel()
    degenerate = torch.floor(mean + 0.5).to(torch.float32).reshape(-1, 1, 1, 1)
    return _pil_blend(degenerate, images, v)


def _auto_contrast(images: torch.Tensor) -> torch.Tensor:
    n, c = images.shape[:2]
    lo, hi = torch.aminmax(images.reshape(n, c, -1), dim=2)
    lo, hi = lo.to(torch.float64), hi.to(torch.float64)
    flat = hi <= lo
    # a tensor over a tensor: ``255.0 / t`` would be reciprocal(t)·255, rounded twice unlike Python's 255.0 / x
    scale = torch.where(flat, 0.0, torch.full_like(hi, 255.0) / torch.where(flat, 1.0, hi - lo))
    offset = torch.where(flat, lo, -lo * scale)
    return images.to(torch.float64).mul_(scale[..., None, None]).add_(offset[..., None, None]).to(torch.uint8)


def _cutout(images: torch.Tensor, v: float, centres: list[tuple[float, float]]) -> torch.Tensor:
    n, c, h, w = images.shape
    boxes = [cutout_box(v, centre, (h, w)) or (0, 0, 0, 0) for centre in centres]
    x0, y0, x1, y1 = torch.tensor(boxes, dtype=torch.int64).to(images.device).unbind(1)
    cols, rows = torch.arange(w, device=images.device), torch.arange(h, device=images.device)
    in_cols = (cols >= x0[:, None]) & (cols < x1[:, None])
    in_rows = (rows >= y0[:, None]) & (rows < y1[:, None])
    hole = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]  # [N, 1, H, W]
    return torch.where(hole, _cutout_fill(c, images.dtype).to(images.device), images)


def apply_op_batch(images: torch.Tensor, name: str, v: float, *, centres=None) -> torch.Tensor:
    """``apply_op`` on every image of ``images`` [N, C, H, W] at once (``centres``: one per image, Cutout only)."""
    spec = OPS[name]
    if spec.signed:
        return _geometric(images, name, v)
    if name == "Contrast":
        return _contrast(images, v)
    if name == "AutoContrast":
        return _auto_contrast(images)
    if name == "Cutout":
        return _cutout(images, v, centres)
    return spec.fn(images, v)  # Invert, Equalize, Solarize, Posterize, Color, Brightness, Sharpness take batches


def apply_grouped(subs, images: torch.Tensor, pick, coin, flip_sign, centre) -> torch.Tensor:
    """The stage's draws (lists, as ``FastAAStage`` makes them) applied slot by slot, one call per group."""
    out = images.clone()
    for slot in (0, 1):
        groups: dict[tuple[str, float], list[int]] = {}
        for i, sub in enumerate(pick):
            op, p, v = subs[sub][slot]
            if coin[i][slot] > p:
                continue
            if OPS[op].signed and flip_sign[i][slot] < 0.5:
                v = -v
            groups.setdefault((op, v), []).append(i)
        for (op, v), members in groups.items():
            idx = torch.tensor(members, device=images.device)
            centres = [tuple(centre[i][slot]) for i in members] if op == "Cutout" else None
            out[idx] = apply_op_batch(out[idx], op, v, centres=centres)
    return out
