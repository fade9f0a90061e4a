"""An authors-style execution of MicroNet, written in this project: the reference for speed ratios.

It reproduces how the authors' code *executes* (docs/method.md §3.1, §5.1, §10), not what it computes
differently: NCHW fp32, the activation spelled ``x * relu6(x + 3) / 6`` (three elementwise kernels and
temporaries), squeeze-excitation through ``F.avg_pool2d`` + 1×1 convs + ``torch.sigmoid`` as separate
ops, the orthogonality penalty layer by layer, ``loss.item()`` every step, and augmentation through PIL
image by image in a ``DataLoader``. The weights are the same module tree, so a released checkpoint
(``micronet_v2_pr_60``) loads into it unchanged and its logits match this project's network.

Used by ``micronet bench train|eval|epoch`` (``bench/measure.py``) only.
"""

from __future__ import annotations

import random
import time
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from micronet_lib.accel.kernel_blocks import plain_layers
from micronet_lib.augment.fastaa import FASTAA_4X_ORDER, policy_set
from micronet_lib.augment.pil_ops import pil_crop_flip, pil_to_normalised, PilFastAAPipeline
from micronet_lib.data import normalize
from micronet_lib.models.blocks import HSwish, MicroBlock, SqueezeExcite
from micronet_lib.regularizers import cutmix, make_loss
from micronet_lib.regularizers.orthogonality import orthogonality_penalty

__all__ = ["AuthorsHSwish", "AuthorsSqueezeExcite", "authors_style", "authors_step", "authors_epoch", "PilImageDataset"]


class AuthorsHSwish(nn.Module):
    """The authors' spelling of h-swish: ``x * F.relu6(x + 3) / 6`` (docs/method.md §3.1), unfused."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * F.relu6(x + 3.0) / 6.0


class AuthorsSqueezeExcite(nn.Module):
    """The authors' SE: ``w = avg_pool2d(u, H)``; ``w = hswish(fc1(w))``; ``w = sigmoid(fc2(w))``; ``u * w``."""

    def __init__(self, se: SqueezeExcite):
        super().__init__()
        self._fcs = se._fcs  # unregistered, as in SqueezeExcite: the block owns fc1/fc2
        self.applied = se.applied
        self.act = AuthorsHSwish()

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        fc1, fc2 = self._fcs
        w = F.avg_pool2d(u, u.size(2))
        w = torch.sigmoid(fc2(self.act(fc1(w))))
        return u * w if self.applied else u  # stride 2: computed and discarded, as the authors


def authors_style(model: nn.Module) -> nn.Module:
    """``model`` (in place) with every activation and SE module swapped for the authors' spelling, on the
    plain PyTorch layers (no training kernel: the authors had none)."""
    plain_layers(model)

    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, HSwish):
                setattr(module, name, AuthorsHSwish())
            elif isinstance(child, SqueezeExcite) and isinstance(module, MicroBlock):
                setattr(module, name, AuthorsSqueezeExcite(child))
    return model


def _per_layer_ortho(model: nn.Module) -> torch.Tensor:
    return orthogonality_penalty(model, batched=False)


def authors_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable, *, ortho_coef: float = 0.7
                 ) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None, float], float]:
    """One authors-style step: forward, loss + λ·ortho (per layer), backward, SGD, ``loss.item()``."""

    def step(x: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor | None = None, lam: float = 1.0) -> float:
        logits = model(x)
        loss = loss_fn(logits, y_a, y_b, lam)
        if ortho_coef:
            loss = loss + ortho_coef * _per_layer_ortho(model)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()  # the authors' per-step host read (docs/method.md §5.5 logging)

    return step


class PilImageDataset(torch.utils.data.Dataset):
    """uint8 images served one by one through PIL: FastAA sub-policy → crop → flip → ToTensor → Normalize.

    The authors' dataset + transform (docs/method.md §5.1, §5.2): item ``i`` of a 4×-replicated epoch is
    image ``i % n`` under policy set ``i // n``. Randomness: one ``random.Random`` per item, seeded
    from ``(seed, i)``, so the data is the same whatever the number of workers.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, pipeline, *, seed: int = 0):
        self.images, self.labels, self.pipeline, self.seed = images, labels, pipeline, int(seed)
        self.copies = int(pipeline.copies_per_epoch)

    def __len__(self) -> int:
        return self.copies * len(self.images)

    def __getitem__(self, i: int):
        from PIL import Image

        n = len(self.images)
        rng = random.Random(self.seed * 1_000_003 + i)
        img = Image.fromarray(self.images[i % n].permute(1, 2, 0).numpy())
        if self.pipeline.fastaa:
            subs = self.pipeline._magnitudes[i // n]
            img = self.pipeline.apply_policy(img, subs[rng.randrange(len(subs))], rng)
        img = pil_crop_flip(img, rng)
        return pil_to_normalised(img, self.pipeline.mean, self.pipeline.std), int(self.labels[i % n])


def authors_epoch(model: nn.Module, ds, *, batch_size: int = 128, eval_batch_size: int = 256, loss: str = "wls",
                  ortho_coef: float = 0.7, seed: int = 0, num_workers: int = 0, max_batches: int | None = None,
                  device: str | torch.device = "cpu") -> dict:
    """One authors-style epoch (FastAA 4× through PIL, CutMix every batch, ``loss``, λ·ortho) + a test pass.

    Returns ``{"images": n, "seconds": s}``; images counts the training samples seen.
    """
    pipeline = PilFastAAPipeline([policy_set(name) for name in FASTAA_4X_ORDER], mean=ds.mean, std=ds.std)
    gen = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(PilImageDataset(ds.train.images, ds.train.labels, pipeline, seed=seed),
                                         batch_size=batch_size, shuffle=True, generator=gen, num_workers=num_workers)
    device = torch.device(device)
    model.to(device)
    loss_fn = make_loss(loss, num_classes=ds.num_classes).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-5)
    step = authors_step(model, optimizer, loss_fn, ortho_coef=ortho_coef)
    t0 = time.perf_counter()
    loss_fn.update_similarity(model)
    model.train()
    seen = 0
    for b, (x, y) in enumerate(loader):
        if max_batches is not None and b >= max_batches:
            break
        x, y_a, y_b, lam = cutmix(x, y, generator=gen)
        step(x.to(device), y_a.to(device), y_b.to(device), lam)
        seen += len(y)
    model.eval()
    with torch.no_grad():
        for lo in range(0, len(ds.test), eval_batch_size):
            logits = model(normalize(ds.test.images[lo:lo + eval_batch_size].to(device), ds.mean, ds.std))
            (logits.argmax(1).cpu() == ds.test.labels[lo:lo + eval_batch_size]).sum().item()
    return {"images": seen, "seconds": time.perf_counter() - t0}
