"""A deterministic, CIFAR-shaped, learnable smoke set (class colour + oriented stripes + noise)."""

from __future__ import annotations

import torch

from .core import Dataset, Split, channel_stats

def _synthetic_split(num_classes: int, per_class: int, gen: torch.Generator) -> Split:
    """Class c: a colour and an oriented stripe pattern drawn once per class (``protos``), per image a
    random phase, contrast jitter and pixel noise, so pooled colour alone is informative but noisy."""
    protos = _synthetic_prototypes(num_classes)
    n = num_classes * per_class
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    colour, freq, angle = protos["colour"][labels], protos["freq"][labels], protos["angle"][labels]
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    phase = torch.rand(n, generator=gen) * 6.2832
    coord = xx * torch.cos(angle).view(-1, 1, 1) + yy * torch.sin(angle).view(-1, 1, 1)
    stripes = torch.sin(coord * freq.view(-1, 1, 1) + phase.view(-1, 1, 1))  # [N, 32, 32]
    contrast = 40 + 30 * torch.rand(n, 1, 1, 1, generator=gen)
    # Per-image brightness and tint jitter blur the class colours into each other: colour alone is
    # not enough for a perfect score, so a model that also uses the stripes does measurably better.
    jitter = 18 * torch.randn(n, 1, 1, 1, generator=gen) + 10 * torch.randn(n, 3, 1, 1, generator=gen)
    noise = 35 * torch.randn(n, 3, 32, 32, generator=gen)
    x = colour.view(n, 3, 1, 1) + jitter + contrast * stripes.unsqueeze(1) + noise
    perm = torch.randperm(n, generator=gen)  # mixed order, like the CIFAR pickles
    return Split(x.round().clamp(0, 255).to(torch.uint8)[perm], labels[perm])


def _synthetic_prototypes(num_classes: int) -> dict[str, torch.Tensor]:
    # Fixed seed: the class definitions do not depend on the sampling seed, only the images do.
    g = torch.Generator().manual_seed(1234567)
    return {"colour": 95 + 65 * torch.rand(num_classes, 3, generator=g),
            "freq": 0.3 + 0.9 * torch.rand(num_classes, generator=g),
            "angle": torch.rand(num_classes, generator=g) * 3.1416}


# Peak resident memory of _synthetic_split per image: ~19 float32 image-sized temporaries (measured
# 57.7 kB/image with psutil over 30k images), rounded up.
_SYNTHETIC_BYTES_PER_IMAGE = 60_000


def _check_memory(n_images: int, bytes_per_image: int, what: str, fix: str) -> None:
    """Refuse up front what would not fit in the memory available now (instead of an OOM kill later)."""
    import psutil

    need, available = n_images * bytes_per_image, psutil.virtual_memory().available
    if need > 0.9 * available:
        raise ValueError(f"{what} needs about {need / 1e9:.1f} GB of memory, but {available / 1e9:.1f} GB are available; {fix}")


def load_synthetic(*, seed: int, classes: int, train_per_class: int, test_per_class: int) -> Dataset:
    for field, value in (("synthetic_classes", classes), ("synthetic_train_per_class", train_per_class),
                         ("synthetic_test_per_class", test_per_class)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (2 if field == "synthetic_classes" else 1):
            raise ValueError(f"{field} must be an int >= {2 if field == 'synthetic_classes' else 1}, got {value!r}")
    _check_memory(classes * (train_per_class + test_per_class), _SYNTHETIC_BYTES_PER_IMAGE,
                  f"synthetic data ({classes} classes x {train_per_class} train + {test_per_class} test images)",
                  "lower train_per_class / test_per_class")
    gen = torch.Generator().manual_seed(int(seed))
    train = _synthetic_split(classes, train_per_class, gen)
    test = _synthetic_split(classes, test_per_class, gen)
    mean, std = channel_stats(train.images)
    names = tuple(f"class_{i:02d}" for i in range(classes))
    return Dataset("synthetic", "synthetic (smoke)", names, mean, std, train, test)
