"""MobileNetV2 (Sandler et al. 2018) adapted to 32×32 inputs, a baseline for comparison tables.

Not part of the paper (docs/method.md §1 names MobileNetV3-style blocks as MicroNet's origin). The CIFAR
adaptation is the usual one: the stem and the second stage do not stride, so the 32×32 input reaches
4×4 before pooling instead of 1×1. Everything else (widths, expansion 6, ReLU6, linear bottlenecks,
1280-wide last conv, dropout 0.2) is the ImageNet network, so its parameter count equals torchvision's
``mobilenet_v2`` with the same class count.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from micronet_lib.models.registry import register_model

__all__ = ["IRStage", "MOBILENETV2_CIFAR_STAGES", "MobileNetV2Cifar", "mobilenetv2_cifar", "make_divisible"]


@dataclass(frozen=True)
class IRStage:
    """(expansion t, output channels c, repeats n, first stride s), as in the MobileNetV2 paper's Table 2."""

    expansion: int
    out_ch: int
    repeats: int
    stride: int


MOBILENETV2_CIFAR_STAGES = (
    IRStage(1, 16, 1, 1),
    IRStage(6, 24, 2, 1),  # ImageNet: stride 2 (CIFAR adaptation keeps 32×32 here)
    IRStage(6, 32, 3, 2),  # → 16×16
    IRStage(6, 64, 4, 2),  # → 8×8
    IRStage(6, 96, 3, 1),
    IRStage(6, 160, 3, 2),  # → 4×4
    IRStage(6, 320, 1, 1),
)


def make_divisible(value: float, divisor: int = 8) -> int:
    """Nearest multiple of ``divisor`` that is at least 90 % of ``value`` (the MobileNet width rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """Expand 1×1 (skipped when t = 1) → depthwise 3×3 → linear project 1×1; identity skip when shapes match."""

    def __init__(self, in_ch: int, out_ch: int, *, stride: int, expansion: int):
        super().__init__()
        hidden = in_ch * expansion
        self.has_residual = stride == 1 and in_ch == out_ch
        self.stride = stride
        self.expand = _conv_bn(in_ch, hidden, 1) if expansion != 1 else nn.Identity()
        self.depthwise = _conv_bn(hidden, hidden, 3, stride, groups=hidden)
        self.project = _conv_bn(hidden, out_ch, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.has_residual else out


class MobileNetV2Cifar(nn.Module):
    def __init__(self, *, num_classes: int = 100, width_mult: float = 1.0, dropout: float = 0.2):
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes={num_classes!r} must be a positive integer")
        if not isinstance(width_mult, (int, float)) or not 0 < width_mult <= 16:
            raise ValueError(f"width_mult={width_mult!r} must be a number in (0, 16]")
        if not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ValueError(f"dropout={dropout!r} must be in [0, 1)")
        in_ch = make_divisible(32 * width_mult)
        last = make_divisible(1280 * max(1.0, width_mult))
        layers: list[nn.Module] = [_conv_bn(3, in_ch, 3, stride=1)]  # ImageNet: stride 2
        for stage in MOBILENETV2_CIFAR_STAGES:
            out_ch = make_divisible(stage.out_ch * width_mult)
            for r in range(stage.repeats):
                layers.append(InvertedResidual(in_ch, out_ch, stride=stage.stride if r == 0 else 1, expansion=stage.expansion))
                in_ch = out_ch
        layers.append(_conv_bn(in_ch, last, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


@register_model("mobilenetv2_cifar")
def mobilenetv2_cifar(*, num_classes: int = 100, width_mult: float = 1.0, dropout: float = 0.2) -> MobileNetV2Cifar:
    """MobileNetV2 for 32×32 inputs (stem and stage 2 unstrided); a comparison baseline, not the paper's."""
    return MobileNetV2Cifar(num_classes=num_classes, width_mult=width_mult, dropout=dropout)
