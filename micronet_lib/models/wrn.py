"""WideResNet-28-10, the CIFAR-100 normaliser of the MicroNet Challenge (docs/scoring.md §1, §7.2).

Pre-activation blocks (Zagoruyko & Komodakis 2016): BN → ReLU → conv 3×3 (stride s) → BN → ReLU →
(dropout) → conv 3×3, plus a 1×1 projection shortcut, applied to the pre-activated input, where the
width changes; all convs bias-free; a final BN → ReLU → global average pool → Linear(640 → classes).
For 100 classes it has 36,536,884 trainable parameters (36,454,832 conv weights + 64,100 classifier +
17,952 BN affine; docs/scoring.md §7.2). The challenge's own count of this network (36,529,028 params,
10,490,270,720 ops) uses a fixed layout, not this forward pass: see ``micronet_lib.scoring.layouts``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from micronet_lib.models.registry import register_model

__all__ = ["WRNConfig", "WideBlock", "WideResNet", "wrn28_10"]


@dataclass(frozen=True)
class WRNConfig:
    """WRN-d-k: depth d = 6·n + 4 (n blocks per group), widen factor k, widths 16k / 32k / 64k."""

    depth: int = 28
    widen: int = 10
    num_classes: int = 100
    dropout: float = 0.0

    def __post_init__(self):
        if isinstance(self.depth, bool) or not isinstance(self.depth, int) or self.depth < 10 or (self.depth - 4) % 6:
            raise ValueError(f"WRNConfig.depth={self.depth!r} must be an integer 6·n + 4 with n >= 1 (e.g. 16, 22, 28, 40)")
        if isinstance(self.widen, bool) or not isinstance(self.widen, int) or self.widen < 1:
            raise ValueError(f"WRNConfig.widen={self.widen!r} must be a positive integer")
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ValueError(f"WRNConfig.num_classes={self.num_classes!r} must be a positive integer")
        if not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"WRNConfig.dropout={self.dropout!r} must be in [0, 1)")

    @property
    def blocks_per_group(self) -> int:
        return (self.depth - 4) // 6

    @property
    def widths(self) -> tuple[int, int, int]:
        return (16 * self.widen, 32 * self.widen, 64 * self.widen)


class WideBlock(nn.Module):
    """Pre-activation basic block; ``stride`` on the first 3×3 conv; 1×1 shortcut iff widths differ."""

    def __init__(self, in_ch: int, out_ch: int, *, stride: int, dropout: float = 0.0):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride={stride!r} is not supported; allowed: 1, 2")
        self.in_ch, self.out_ch, self.stride = in_ch, out_ch, stride
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu2 = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        # Projection only where the shape changes (width; the stride always comes with a width change).
        self.shortcut: nn.Module = nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False) if in_ch != out_ch else nn.Identity()
        self.has_projection = in_ch != out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.relu1(self.bn1(x))
        # The projection sees the pre-activated input (the WRN reference); the identity sees x.
        skip = self.shortcut(a) if self.has_projection else x
        out = self.conv2(self.dropout(self.relu2(self.bn2(self.conv1(a)))))
        return out + skip


class WideResNet(nn.Module):
    """Stem conv 3×3 3→16, three groups of ``WideBlock`` at 32 / 16 / 8 px, BN-ReLU, GAP, Linear."""

    def __init__(self, config: WRNConfig):
        super().__init__()
        self.config = config
        w1, w2, w3 = config.widths
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        groups, in_ch = [], 16
        for width, stride in ((w1, 1), (w2, 2), (w3, 2)):
            blocks = []
            for i in range(config.blocks_per_group):
                blocks.append(WideBlock(in_ch, width, stride=stride if i == 0 else 1, dropout=config.dropout))
                in_ch = width
            groups.append(nn.Sequential(*blocks))
        self.block1, self.block2, self.block3 = groups
        self.bn = nn.BatchNorm2d(in_ch)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(in_ch, config.num_classes)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                # float32 normal draws hit exactly 0 a few times in 36M; the scorer reads sparsity from
                # exact zeros (docs/scoring.md §5.1), so a fresh baseline must be exactly dense.
                m.weight.copy_(torch.where(m.weight == 0, torch.finfo(m.weight.dtype).tiny, m.weight))
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()
            elif isinstance(m, nn.Linear):
                bound = 1 / math.sqrt(m.in_features)
                m.weight.uniform_(-bound, bound)
                m.weight.copy_(torch.where(m.weight == 0, bound / 2, m.weight))
                m.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.fc(self.flatten(self.pool(self.relu(self.bn(x)))))


@register_model("wrn28_10")
def wrn28_10(*, num_classes: int = 100, dropout: float = 0.0) -> WideResNet:
    """WideResNet-28-10 (docs/scoring.md §7.2): the challenge's CIFAR-100 baseline and score normaliser."""
    return WideResNet(WRNConfig(depth=28, widen=10, num_classes=num_classes, dropout=dropout))
