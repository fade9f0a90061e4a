"""The 15 Fast-AutoAugment operations on uint8 CHW tensors (docs/method.md §7.2–7.3).

Each op takes an image ``[C, H, W]`` (uint8) and its magnitude ``v`` (already mapped from the policy
level by :func:`op_magnitude`, sign included) and returns a new uint8 image. The implementations use
``torchvision.transforms.v2.functional`` kernels and reproduce the authors' PIL semantics:

- geometric ops: nearest neighbour, uncovered pixels black (0, 0, 0), top-left origin as in
  ``PIL.Image.transform(AFFINE)``; ShearX: output (x, y) samples input (x + v·y, y) (torchvision's
  shear angle is atan(v) about centre (0, 0), which gives PIL's map exactly); TranslateX: output
  (x, y) samples input (x + v·W, y); Rotate: counter-clockwise about the image centre;
- Cutout: side L = v·W, PIL rectangle with inclusive, truncated corners, fill (125, 123, 114);
- Contrast, Color, AutoContrast: PIL's integer grey conversion, float32 blend and truncation,
  reproduced bit for bit (torchvision's float kernels differ by one or two grey levels on some pixels).

Speed: a nearest-neighbour geometric op only moves pixels, so its effect is fully described by a
source-index map. :func:`apply_op` computes that map once per (op, v, H, W) by running the same
torchvision kernel on an image of pixel indices, caches it, and then applies the op as one gather
(policy magnitudes come from a finite set of levels, so the cache stays small).

The per-pixel equivalence with PIL is checked against :mod:`micronet_lib.augment.pil_ops` in the tests.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torchvision.transforms.v2.functional as F

__all__ = [
    "CUTOUT_FILL",
    "warm_geometric_cache",
    "OPS",
    "OpSpec",
    "SIGNED_OPS",
    "apply_op",
    "cutout_box",
    "op_magnitude",
]

CUTOUT_FILL = (125, 123, 114)  # FastAA's Cutout colour (docs/method.md §7.3)
_NEAREST = F.InterpolationMode.NEAREST
_BLACK = [0.0]


def _affine(img: torch.Tensor, *, translate=(0.0, 0.0), shear=(0.0, 0.0), center=None) -> torch.Tensor:
    return F.affine_image(
        img, angle=0.0, translate=list(translate), scale=1.0, shear=list(shear),
        interpolation=_NEAREST, fill=_BLACK, center=center,
    )


def _shear_x(img, v):
    return _affine(img, shear=(math.degrees(math.atan(v)), 0.0), center=[0, 0])


def _shear_y(img, v):
    return _affine(img, shear=(0.0, math.degrees(math.atan(v))), center=[0, 0])


def _translate_x(img, v):
    # PIL's affine offset samples input (x + t); torchvision's translate moves content by +t.
    return _affine(img, translate=(-v * img.shape[-1], 0.0))


def _translate_y(img, v):
    return _affine(img, translate=(0.0, -v * img.shape[-2]))


def _rotate(img, v):
    return F.rotate_image(img, angle=v, interpolation=_NEAREST, fill=_BLACK)


# PIL's RGB → "L" weights: L = (19595·R + 38470·G + 7471·B + 0x8000) >> 16 (ITU-R 601-2, fixed point).
_PIL_LUMA = torch.tensor([19595.0, 38470.0, 7471.0]).reshape(3, 1, 1)


def _pil_grey(img: torch.Tensor) -> torch.Tensor:
    """PIL's "L" conversion of a uint8 RGB image [3, H, W] as float32 [1, H, W] integers.

    Every intermediate is an integer below 2**24 (255·65536 + 0x8000 < 2**24), so float32 holds the
    fixed-point sum exactly in any order, and the shift is an exact division by 2**16 then floor.
    Elementwise products and a sum, not a matmul: under TF32 (``allow_tf32=True`` on a GPU, where the
    batch is augmented inside ``fit``'s TF32 setting) a matmul may round the weights to 11 significant bits.
    """
    acc = (img.to(torch.float32) * _PIL_LUMA.to(img.device)).sum(dim=-3, keepdim=True).add_(float(0x8000))
    return acc.div_(65536.0, rounding_mode="floor")


def _pil_blend(degenerate, img: torch.Tensor, factor: float) -> torch.Tensor:
    """``Image.blend(degenerate, img, factor)`` bit for bit: d + α·(i − d) in float32, clipped, truncated.

    PIL's C code takes α as a C float and computes ``in1 + alpha * (in2 - in1)`` in float, then casts to
    UINT8 (truncation), clipping to [0, 255] when α > 1. ``degenerate`` holds integers (a float32
    tensor or a Python int), so i − d is exact and each op below rounds as the C expression does.
    """
    alpha = float(np.float32(factor))  # exactly representable: torch's float32 multiply matches C's
    return img.to(torch.float32).sub_(degenerate).mul_(alpha).add_(degenerate).clamp_(0, 255).to(torch.uint8)


def _auto_contrast(img, _v):
    # ImageOps.autocontrast (cutoff 0): per channel lut[i] = int(i·s + (−lo·s)), s = 255 / (hi − lo), in
    # float64 as PIL's Python loop computes it; a flat channel (hi <= lo) is left as is (s = 0, offset lo).
    # Every pixel lies in [lo, hi], so the value lies in [0, 255] up to round-off and the uint8 cast
    # (truncation toward zero) is PIL's int() and clip.
    c = img.shape[0]
    lo, hi = torch.aminmax(img.reshape(c, -1), dim=1)
    coef = []
    for low, high in zip(lo.tolist(), hi.tolist()):
        scale = 255.0 / (high - low) if high > low else 0.0
        coef.append((scale, -low * scale if high > low else float(low)))
    coef = torch.tensor(coef, dtype=torch.float64).t().reshape(2, c, 1, 1).to(img.device)
    return img.to(torch.float64).mul_(coef[0]).add_(coef[1]).to(torch.uint8)


def _invert(img, _v):
    return F.invert_image(img)


def _equalize(img, _v):
    return F.equalize_image(img)


def _solarize(img, v):
    # Pixels >= v are inverted; v in (255, 256] inverts nothing (torchvision rejects thresholds > 255).
    return img.clone() if v > 255 else F.solarize_image(img, threshold=v)


def _posterize(img, v):
    return F.posterize_image(img, bits=int(v))


def _contrast(img, v):
    # ImageEnhance.Contrast: blend with the flat grey int(mean(L) + 0.5) (PIL's ImageStat mean).
    grey = _pil_grey(img)
    return _pil_blend(int(float(grey.sum(dtype=torch.float64)) / grey.numel() + 0.5), img, v)


def _color(img, v):
    # ImageEnhance.Color: blend with the image's own "L" conversion.
    return _pil_blend(_pil_grey(img), img, v)


def _brightness(img, v):
    return F.adjust_brightness_image(img, brightness_factor=v)


def _sharpness(img, v):
    return F.adjust_sharpness_image(img, sharpness_factor=v)


@functools.lru_cache(maxsize=8192)
def _geometric_index(name: str, v: float, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(source flat index, uncovered mask) of geometric op ``name`` at ``v``, via the torchvision kernel."""
    # Pixel k carries the value k + 1 (exact in float32); fill 0 marks uncovered output pixels.
    coords = torch.arange(1, height * width + 1, dtype=torch.float32).reshape(1, height, width)
    moved = OPS[name].fn(coords, v).reshape(-1).round().long() - 1
    uncovered = moved < 0
    return moved.clamp_(min=0), uncovered


def warm_geometric_cache(ops: list[tuple[str, float]], height: int = 32, width: int = 32) -> int:
    """Precompute the index maps of geometric ``(op, v)`` pairs at both signs; returns how many."""
    count = 0
    for name, v in ops:
        if OPS[name].signed:
            for signed_v in (float(v), -float(v)):
                _geometric_index(name, signed_v, height, width)
                count += 1
    return count


def _apply_geometric(img: torch.Tensor, name: str, v: float) -> torch.Tensor:
    c, h, w = img.shape
    index, uncovered = _geometric_index(name, float(v), h, w)
    out = img.reshape(c, h * w).index_select(1, index.to(img.device))
    return out.masked_fill_(uncovered.to(img.device), 0).reshape(c, h, w)


def cutout_box(v: float, centre: tuple[float, float], size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """FastAA Cutout rectangle as half-open ``(x0, y0, x1, y1)`` pixel ranges, or ``None`` for v ≤ 0.

    L = v·W; x0 = int(max(0, cx − L/2)); x1 = min(W, x0 + L); PIL draws the inclusive rectangle with
    truncated float corners, i.e. columns x0 … int(x1) (clipped to the image). ``size`` = (H, W).
    """
    if v <= 0:
        return None
    height, width = size
    side = v * width
    x0 = int(max(0.0, centre[0] - side / 2.0))
    y0 = int(max(0.0, centre[1] - side / 2.0))
    x1 = min(float(width), x0 + side)
    y1 = min(float(height), y0 + side)
    return x0, y0, min(int(x1) + 1, width), min(int(y1) + 1, height)


@functools.lru_cache(maxsize=16)
def _cutout_fill(channels: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor(CUTOUT_FILL[:channels], dtype=dtype)[:, None, None]


def _cutout(img, v, centre=None):
    if centre is None:
        raise ValueError("Cutout needs its centre (cx, cy) in pixels; apply_op draws it from the generator")
    box = cutout_box(v, centre, tuple(img.shape[-2:]))
    out = img.clone()
    if box is not None:
        x0, y0, x1, y1 = box
        out[:, y0:y1, x0:x1] = _cutout_fill(img.shape[0], img.dtype).to(img.device)
    return out


@dataclass(frozen=True)
class OpSpec:
    """One FastAA op: magnitude range [low, high], whether its sign flips with p = 0.5, the kernel."""

    low: float
    high: float
    signed: bool
    fn: Callable[..., torch.Tensor]


# Ranges from docs/method.md §7.3 (Fast-AutoAugment's augment list); ops without a magnitude ignore v.
OPS: dict[str, OpSpec] = {
    "ShearX": OpSpec(-0.3, 0.3, True, _shear_x),
    "ShearY": OpSpec(-0.3, 0.3, True, _shear_y),
    "TranslateX": OpSpec(-0.45, 0.45, True, _translate_x),
    "TranslateY": OpSpec(-0.45, 0.45, True, _translate_y),
    "Rotate": OpSpec(-30.0, 30.0, True, _rotate),
    "AutoContrast": OpSpec(0.0, 1.0, False, _auto_contrast),
    "Invert": OpSpec(0.0, 1.0, False, _invert),
    "Equalize": OpSpec(0.0, 1.0, False, _equalize),
    "Solarize": OpSpec(0.0, 256.0, False, _solarize),
    "Posterize": OpSpec(4.0, 8.0, False, _posterize),
    "Contrast": OpSpec(0.1, 1.9, False, _contrast),
    "Color": OpSpec(0.1, 1.9, False, _color),
    "Brightness": OpSpec(0.1, 1.9, False, _brightness),
    "Sharpness": OpSpec(0.1, 1.9, False, _sharpness),
    "Cutout": OpSpec(0.0, 0.2, False, _cutout),
}
SIGNED_OPS = tuple(name for name, spec in OPS.items() if spec.signed)


def _spec(name: str) -> OpSpec:
    try:
        return OPS[name]
    except KeyError:
        raise ValueError(f"unknown FastAA op {name!r}; known ops: {', '.join(OPS)}") from None


def op_magnitude(name: str, level: float) -> float:
    """v = low + level·(high − low) for a policy level in [0, 1] (docs/method.md §7.2), before any sign flip."""
    spec = _spec(name)
    if not 0.0 <= level <= 1.0:
        raise ValueError(f"level={level!r} of op {name!r} must lie in [0, 1]")
    return spec.low + level * (spec.high - spec.low)


def apply_op(
    img: torch.Tensor, name: str, v: float, *, centre: tuple[float, float] | None = None, cached: bool = True
) -> torch.Tensor:
    """Apply op ``name`` with signed magnitude ``v`` to one uint8 image [C, H, W] (``centre``: Cutout only).

    ``cached=False`` runs the torchvision kernel directly instead of the cached index map (same result).
    """
    spec = _spec(name)
    if not spec.signed and not (v >= 0 and (name != "Posterize" or v <= 8)):
        raise ValueError(f"magnitude v={v!r} of op {name!r} is outside its range [{spec.low}, {spec.high}]")
    if spec.signed and cached:
        return _apply_geometric(img, name, v)
    if name == "Cutout":
        return spec.fn(img, v, centre)
    return spec.fn(img, v)
