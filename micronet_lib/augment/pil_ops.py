"""PIL reference of the FastAA pipeline: the authors' per-image approach (docs/method.md §5.1, §7).

Used by ``micronet bench augment`` as the comparison point and by the tests to cross-check the tensor
ops of :mod:`micronet_lib.augment.ops` pixel by pixel. Written from the op table of docs/method.md §7.3.
"""

from __future__ import annotations

import random
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from micronet_lib.augment.ops import CUTOUT_FILL, OPS, op_magnitude

__all__ = ["PilFastAAPipeline", "pil_apply_op", "pil_crop_flip", "pil_to_normalised"]


def _affine(img: Image.Image, data: tuple) -> Image.Image:
    # PIL's AFFINE data maps output (x, y) to input (a·x + b·y + c, d·x + e·y + f); NEAREST, black fill.
    return img.transform(img.size, Image.AFFINE, data, resample=Image.NEAREST, fillcolor=(0, 0, 0))


def pil_apply_op(img: Image.Image, name: str, v: float, *, centre: tuple[float, float] | None = None) -> Image.Image:
    """The PIL version of op ``name`` with signed magnitude ``v`` (``centre``: Cutout only)."""
    if name not in OPS:
        raise ValueError(f"unknown FastAA op {name!r}; known ops: {', '.join(OPS)}")
    w, h = img.size
    if name == "ShearX":
        return _affine(img, (1, v, 0, 0, 1, 0))
    if name == "ShearY":
        return _affine(img, (1, 0, 0, v, 1, 0))
    if name == "TranslateX":
        return _affine(img, (1, 0, v * w, 0, 1, 0))
    if name == "TranslateY":
        return _affine(img, (1, 0, 0, 0, 1, v * h))
    if name == "Rotate":
        return img.rotate(v, resample=Image.NEAREST, fillcolor=(0, 0, 0))
    if name == "AutoContrast":
        return ImageOps.autocontrast(img)
    if name == "Invert":
        return ImageOps.invert(img)
    if name == "Equalize":
        return ImageOps.equalize(img)
    if name == "Solarize":
        return ImageOps.solarize(img, v)
    if name == "Posterize":
        return ImageOps.posterize(img, int(v))
    if name == "Contrast":
        return ImageEnhance.Contrast(img).enhance(v)
    if name == "Color":
        return ImageEnhance.Color(img).enhance(v)
    if name == "Brightness":
        return ImageEnhance.Brightness(img).enhance(v)
    if name == "Sharpness":
        return ImageEnhance.Sharpness(img).enhance(v)
    # Cutout
    if v <= 0:
        return img
    if centre is None:
        raise ValueError("Cutout needs its centre (cx, cy) in pixels")
    side = v * w
    x0 = int(max(0.0, centre[0] - side / 2.0))
    y0 = int(max(0.0, centre[1] - side / 2.0))
    out = img.copy()
    ImageDraw.Draw(out).rectangle((x0, y0, min(w, x0 + side), min(h, y0 + side)), CUTOUT_FILL)
    return out


def pil_crop_flip(img: Image.Image, rng: random.Random, *, padding: int = 4, fill: int = 128) -> Image.Image:
    """RandomCrop(size, padding, fill) then RandomHorizontalFlip(0.5), as in docs/method.md §5.1."""
    w, h = img.size
    padded = ImageOps.expand(img, border=padding, fill=(fill,) * 3)
    top, left = rng.randint(0, 2 * padding), rng.randint(0, 2 * padding)
    img = padded.crop((left, top, left + w, top + h))
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    return img


def pil_to_normalised(img: Image.Image, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """ToTensor + Normalize for one image."""
    x = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).float().div_(255)
    return x.sub_(torch.tensor(mean)[:, None, None]).div_(torch.tensor(std)[:, None, None])


class PilFastAAPipeline:
    """The authors' per-image FastAA input pipeline in PIL: sub-policy → crop → flip → ToTensor → Normalize.

    ``policy_sets`` holds one policy set per copy of the epoch (four for the paper's 4× epoch). Called
    like :class:`~micronet_lib.augment.pipelines.AugmentPipeline` on a uint8 batch, it converts each
    image to PIL (``Image.fromarray``, as the authors' dataset does) and works image by image.
    """

    def __init__(self, policy_sets: Sequence[Sequence], *, mean, std, fastaa: bool = True) -> None:
        self.policy_sets = [list(s) for s in policy_sets] if fastaa else [[]]
        self.fastaa = fastaa
        self.mean, self.std = tuple(mean), tuple(std)
        self.copies_per_epoch = len(self.policy_sets)
        self._magnitudes = [
            [tuple((name, p, op_magnitude(name, level)) for name, p, level in sub) for sub in s] for s in self.policy_sets
        ]

    def apply_policy(self, img: Image.Image, subpolicy, rng: random.Random) -> Image.Image:
        for name, p, v in subpolicy:
            if rng.random() > p:
                continue
            if OPS[name].signed and rng.random() > 0.5:
                v = -v
            # The authors' np.random.uniform(w): low = w, high = 1.0, i.e. uniform on (1, w] (docs/method.md §7.3).
            centre = (rng.uniform(img.size[0], 1.0), rng.uniform(img.size[1], 1.0)) if name == "Cutout" else None
            img = pil_apply_op(img, name, v, centre=centre)
        return img

    def __call__(self, images: torch.Tensor, *, copy: int = 0, generator: torch.Generator | None = None) -> torch.Tensor:
        if not 0 <= copy < self.copies_per_epoch:
            raise ValueError(f"copy={copy!r} must lie in [0, {self.copies_per_epoch})")
        rng = random.Random(int(torch.randint(0, 2**62, (1,), generator=generator).item()))
        subs = self._magnitudes[copy]
        arrays = images.permute(0, 2, 3, 1).cpu().numpy()
        out = []
        for array in arrays:
            img = Image.fromarray(array)
            if self.fastaa:
                img = self.apply_policy(img, subs[rng.randrange(len(subs))], rng)
            img = pil_crop_flip(img, rng)
            out.append(pil_to_normalised(img, self.mean, self.std))
        return torch.stack(out)
