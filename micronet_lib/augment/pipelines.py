"""Named input pipelines: uint8 batch in, normalised float32 batch out (docs/method.md §5.1, §5.2, §7.5).

``build_pipeline(name, mean=..., std=...)`` → :class:`AugmentPipeline`, called as
``pipeline(images_uint8 [B, 3, H, W], copy=k, generator=g)``. Names (``list_pipelines()``):

| name | stages (then normalise with the dataset's mean/std) |
|---|---|
| ``test`` | nothing (normalise only, §5.1 "Test") |
| ``baseline`` | pad-4 crop (fill 128) + horizontal flip |
| ``cutout`` | crop + flip + Cutout 16 px, zeroed before normalisation (§7.5) |
| ``autoaugment`` | crop + flip + torchvision's AutoAugment **CIFAR-10** policy + Cutout 16 (the authors' "Auto" mode, §7.5; the challenge rules forbid it for CIFAR-100 entries) |
| ``randaugment[:N[:M]]`` | crop + flip + RandAugment(N ops, magnitude M; default 2, 9) |
| ``trivialaugment`` | crop + flip + TrivialAugmentWide |
| ``augmix`` | crop + flip + AugMix |
| ``fastaa[:set]`` | one FastAA policy set (default: the first of the 4× order), then crop + flip (§5.1); ``fastaa:<file>.json``: a searched policy file (§7.6) |
| ``fastaa4x`` | the paper's 4× epoch: ``copies_per_epoch = 4``, copy k uses set k of §5.2 |

Randomness comes only from the passed ``torch.Generator``. torchvision's v2 policy transforms draw from
torch's *global* RNG, so their stage seeds it from the generator inside ``torch.random.fork_rng`` (the
caller's global RNG state is restored afterwards). Crop, flip and normalisation are batched.
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import torch
import torch.nn.functional as nnF

from micronet_lib.augment.fastaa import FASTAA_4X_ORDER, FASTAA_DEFAULT_SET, FastAAStage, is_policy_file, policy_set, resolve_set_name
from micronet_lib.regularizers.mixing import cutout
from micronet_lib.registry import Registry, UnknownNameError

__all__ = ["AugmentPipeline", "CropFlipStage", "CutoutStage", "TorchvisionStage", "build_pipeline", "list_pipelines", "register_pipeline"]

log = logging.getLogger(__name__)

Stage = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class CropFlipStage:
    """RandomCrop(H, padding, fill) + RandomHorizontalFlip(0.5), batched as one gather (docs/method.md §5.1)."""

    def __init__(self, *, padding: int = 4, fill: int = 128) -> None:
        self.padding, self.fill = padding, fill

    def __repr__(self) -> str:
        return f"CropFlipStage(padding={self.padding}, fill={self.fill})"

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, c, h, w = images.shape
        p = self.padding
        padded = nnF.pad(images, (p, p, p, p), value=self.fill)
        top = torch.randint(0, 2 * p + 1, (n,), generator=generator)
        left = torch.randint(0, 2 * p + 1, (n,), generator=generator)
        flip = torch.rand(n, generator=generator) < 0.5
        cols = torch.arange(w)
        # One gather over the flattened padded image; the flip is folded into the column index (a
        # flipped crop reads its columns right to left). ~4× faster than 4-D advanced indexing.
        col_idx = left[:, None] + torch.where(flip[:, None], w - 1 - cols, cols)
        row_idx = top[:, None] + torch.arange(h)
        flat_idx = (row_idx[:, :, None] * (w + 2 * p) + col_idx[:, None, :]).reshape(n, 1, h * w)
        flat_idx = flat_idx.to(images.device).expand(n, c, h * w)
        return torch.gather(padded.reshape(n, c, -1), 2, flat_idx).reshape(n, c, h, w)


class CutoutStage:
    """Cutout with one ``size``-px hole set to 0 before normalisation (docs/method.md §7.5)."""

    def __init__(self, size: int = 16) -> None:
        self.size = size

    def __repr__(self) -> str:
        return f"CutoutStage(size={self.size})"

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return cutout(images, size=self.size, fill=0, generator=generator)


class TorchvisionStage:
    """A torchvision v2 transform applied image by image, its global-RNG draws seeded from ``generator``."""

    def __init__(self, transform: Callable[[torch.Tensor], torch.Tensor], name: str) -> None:
        self.transform, self.name = transform, name

    def __repr__(self) -> str:
        return f"TorchvisionStage({self.name})"

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return torch.stack([self.transform(img) for img in images])


class AugmentPipeline:
    """uint8 [B, 3, H, W] → float32 normalised [B, 3, H, W]; ``copies[k]`` are the stages of epoch copy k."""

    def __init__(self, name: str, copies: Sequence[Sequence[Stage]], *, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean={tuple(mean)!r} and std={tuple(std)!r} must have 3 entries (RGB)")
        if any(s <= 0 for s in std):
            raise ValueError(f"std={tuple(std)!r} must be positive")
        if not copies:
            raise ValueError(f"pipeline {name!r} has no copies")
        self.name = name
        self.copies = [list(stages) for stages in copies]
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self._mean = torch.tensor(self.mean)[:, None, None]
        self._std = torch.tensor(self.std)[:, None, None]

    @property
    def copies_per_epoch(self) -> int:
        return len(self.copies)

    def __repr__(self) -> str:
        return f"AugmentPipeline({self.name!r}, copies={self.copies!r})"

    def __call__(self, images: torch.Tensor, *, copy: int = 0, generator: torch.Generator) -> torch.Tensor:
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"pipeline {self.name!r} takes a uint8 batch [B, 3, H, W], got {got}")
        if not isinstance(copy, int) or not 0 <= copy < self.copies_per_epoch:
            raise ValueError(f"copy={copy!r} must be an int in [0, {self.copies_per_epoch}) for pipeline {self.name!r}")
        if not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator (seeded by the caller), got {type(generator).__name__}")
        x = images
        for stage in self.copies[copy]:
            x = stage(x, generator)
        # Normalise last, as ToTensor + Normalize: /255, then (x − mean)/std (docs/method.md §2).
        mean, std = self._mean.to(x.device), self._std.to(x.device)
        return x.float().div_(255.0).sub_(mean).div_(std)


#: Pipeline builders ``builder(args: list[str]) -> copies`` (args: the ``:``-separated suffix of the name).
PIPELINES: Registry[Callable[[list[str]], list[list[Stage]]]] = Registry(
    "pipeline", example="'randaugment:2:9', 'fastaa:wresnet40x2'")


def register_pipeline(name: str):
    """Register ``builder(args: list[str]) -> copies`` under ``name`` (args: the ``:``-separated suffix)."""
    return PIPELINES.register(name)


def _no_args(name: str, args: list[str]) -> None:
    if args:
        raise ValueError(f"pipeline {name!r} takes no ':' arguments, got {':'.join(args)!r}")


@register_pipeline("test")
def _test(args):
    _no_args("test", args)
    return [[]]


@register_pipeline("baseline")
def _baseline(args):
    _no_args("baseline", args)
    return [[CropFlipStage()]]


@register_pipeline("cutout")
def _cutout(args):
    _no_args("cutout", args)
    return [[CropFlipStage(), CutoutStage(16)]]


def _tv():
    from torchvision.transforms import v2

    return v2


@register_pipeline("autoaugment")
def _autoaugment(args):
    _no_args("autoaugment", args)
    v2 = _tv()
    policy = v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)
    log.warning("autoaugment uses a policy learned on CIFAR-10: not allowed for a CIFAR-100 challenge entry (docs/method.md §7.5)")
    return [[CropFlipStage(), TorchvisionStage(policy, "AutoAugment(CIFAR10)"), CutoutStage(16)]]


@register_pipeline("randaugment")
def _randaugment(args):
    if len(args) > 2:
        raise ValueError(f"randaugment takes at most N and M ('randaugment:N:M'), got {':'.join(args)!r}")
    try:
        n_ops = int(args[0]) if args else 2
        magnitude = int(args[1]) if len(args) > 1 else 9
    except ValueError:
        raise ValueError(f"randaugment:N:M needs integers, got {':'.join(args)!r}") from None
    if n_ops < 0 or not 0 <= magnitude <= 30:
        raise ValueError(f"randaugment N={n_ops} must be >= 0 and M={magnitude} in [0, 30]")
    policy = _tv().RandAugment(num_ops=n_ops, magnitude=magnitude)
    return [[CropFlipStage(), TorchvisionStage(policy, f"RandAugment(N={n_ops}, M={magnitude})")]]


@register_pipeline("trivialaugment")
def _trivialaugment(args):
    _no_args("trivialaugment", args)
    return [[CropFlipStage(), TorchvisionStage(_tv().TrivialAugmentWide(), "TrivialAugmentWide")]]


@register_pipeline("augmix")
def _augmix(args):
    _no_args("augmix", args)
    return [[CropFlipStage(), TorchvisionStage(_tv().AugMix(), "AugMix")]]


@register_pipeline("fastaa")
def _fastaa(args):
    if len(args) > 1:
        raise ValueError(f"fastaa takes one policy set name ('fastaa:<set>'), got {':'.join(args)!r}")
    if args and is_policy_file(args[0]):  # a searched policy file (docs/method.md §7.6)
        return [[FastAAStage(policy_set(args[0]), name=args[0]), CropFlipStage()]]
    set_name = resolve_set_name(args[0]) if args else FASTAA_DEFAULT_SET
    return [[FastAAStage(policy_set(set_name), name=set_name), CropFlipStage()]]


@register_pipeline("fastaa4x")
def _fastaa4x(args):
    _no_args("fastaa4x", args)
    return [[FastAAStage(policy_set(s), name=s), CropFlipStage()] for s in FASTAA_4X_ORDER]


def list_pipelines() -> list[str]:
    """Registered pipeline names (``randaugment`` and ``fastaa`` also take ``:`` arguments)."""
    return PIPELINES.names()


def build_pipeline(name: str, *, mean: Sequence[float], std: Sequence[float]) -> AugmentPipeline:
    """Build a named pipeline (module docstring) that normalises with ``mean``/``std`` last."""
    base, *args = name.split(":")
    if base not in PIPELINES:
        raise UnknownNameError(PIPELINES.unknown_message(base))
    return AugmentPipeline(name, PIPELINES.get(base)(args), mean=mean, std=std)
