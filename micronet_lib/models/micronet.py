"""MicroNet ver1 / ver2 (docs/method.md §3): a table of stages, a builder that threads the input width.

Each stage row is ``StageConfig(expansion, out_ch, repeats, stride)`` from docs/method.md §3.2; only the
first block of a stage strides. Widths of one block (E, H) are computed in ``block_widths`` and nowhere
else. ``build_model("micronet_v1"|"micronet_v2", num_classes=100, ...)`` builds the network.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction

import torch
import torch.nn as nn

from micronet_lib.models.blocks import STRIDE2_SE_MODES, GlobalAvgPool2d, HSwish, MicroBlock, default_norm_layer
from micronet_lib.models.registry import register_model

__all__ = [
    "StageConfig",
    "MicroNetConfig",
    "MicroNet",
    "STAGES",
    "STEM_CHANNELS",
    "SE_RATIO",
    "block_widths",
    "scale_width",
    "scale_depth",
    "weight_group",
    "WEIGHT_GROUPS",
    "micronet_v1",
    "micronet_v2",
]

STEM_CHANNELS = 32  # stem conv 3×3, 3→32 (docs/method.md §3.1)
SE_RATIO = Fraction(1, 4)  # H = floor(0.25 · C_out): ratio on the block *output* width (docs/method.md §3.1)


@dataclass(frozen=True)
class StageConfig:
    """One row of docs/method.md §3.2: ``repeats`` blocks of width ``out_ch``; the first has ``stride``."""

    expansion: float
    out_ch: int
    repeats: int
    stride: int

    def __post_init__(self):
        if not self.expansion > 0:
            raise ValueError(f"StageConfig.expansion={self.expansion!r} must be > 0")
        if int(self.out_ch) != self.out_ch or self.out_ch < 1:
            raise ValueError(f"StageConfig.out_ch={self.out_ch!r} must be a positive integer")
        if int(self.repeats) != self.repeats or self.repeats < 1:
            raise ValueError(f"StageConfig.repeats={self.repeats!r} must be a positive integer")
        if self.stride not in (1, 2):
            raise ValueError(f"StageConfig.stride={self.stride!r} is not supported; allowed: 1, 2")


# docs/method.md §3.2. Resolution drops at stages 2, 5 and 7 (blocks 2, 7, 12): 32 → 16 → 8 → 4.
STAGES: dict[str, tuple[StageConfig, ...]] = {
    "ver1": (
        StageConfig(3, 16, 2, 1),  # 32×32
        StageConfig(3, 32, 1, 2),  # → 16×16
        StageConfig(3, 32, 1, 1),
        StageConfig(3, 48, 3, 1),
        StageConfig(3, 72, 1, 2),  # → 8×8
        StageConfig(3, 72, 4, 1),
        StageConfig(3, 80, 1, 2),  # → 4×4
        StageConfig(3, 88, 2, 1),
        StageConfig(3, 106, 1, 1),
    ),
    "ver2": (
        StageConfig(2.5, 20, 2, 1),  # 32×32
        StageConfig(2.5, 36, 1, 2),  # → 16×16
        StageConfig(2.5, 36, 1, 1),
        StageConfig(2.5, 56, 3, 1),
        StageConfig(2.5, 80, 1, 2),  # → 8×8
        StageConfig(2.5, 80, 4, 1),
        StageConfig(2.5, 88, 1, 2),  # → 4×4
        StageConfig(2.5, 96, 2, 1),
        StageConfig(2.5, 114, 1, 1),
    ),
}


def block_widths(in_ch: int, out_ch: int, expansion: float) -> tuple[int, int]:
    """``(E, H)`` = (floor(e · C_in), floor(0.25 · C_out)), docs/method.md §3.1; at least 1 channel each.

    Exact rational arithmetic (``Fraction(str(e))``), so 2.5 · 36 is 90 and never 89.99999.
    """
    expanded = math.floor(Fraction(str(expansion)) * in_ch)
    hidden = math.floor(SE_RATIO * out_ch)
    return max(1, expanded), max(1, hidden)


def scale_width(channels: int, width_mult: float) -> int:
    """Channel count × ``width_mult``, rounded half up, at least 1 (identity at 1.0)."""
    return max(1, math.floor(Fraction(str(width_mult)) * channels + Fraction(1, 2)))


def scale_depth(repeats: int, depth_mult: float) -> int:
    """Stage repeats × ``depth_mult``, rounded up (EfficientNet convention; identity at 1.0)."""
    return max(1, math.ceil(Fraction(str(depth_mult)) * repeats))


@dataclass(frozen=True)
class MicroNetConfig:
    """Everything that defines a MicroNet; validated before any layer is built."""

    version: str = "ver2"
    num_classes: int = 100
    width_mult: float = 1.0
    depth_mult: float = 1.0
    dropout: float = 0.3  # head dropout (docs/method.md §3.1)
    bn_momentum: float = 0.01  # PyTorch convention; "0.99" in TF terms (docs/method.md §3.1)
    stride2_se: str = "discard"  # docs/method.md §3.1, see blocks.STRIDE2_SE_MODES

    def __post_init__(self):
        if self.version not in STAGES:
            raise ValueError(f"MicroNetConfig.version={self.version!r} is not known; allowed: {', '.join(STAGES)}")
        if isinstance(self.num_classes, bool) or int(self.num_classes) != self.num_classes or self.num_classes < 1:
            raise ValueError(f"MicroNetConfig.num_classes={self.num_classes!r} must be a positive integer")
        for field in ("width_mult", "depth_mult"):
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or not 0 < value <= 16:
                raise ValueError(f"MicroNetConfig.{field}={value!r} must be a number in (0, 16]")
        if not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"MicroNetConfig.dropout={self.dropout!r} must be in [0, 1)")
        if not isinstance(self.bn_momentum, (int, float)) or not 0 < self.bn_momentum <= 1:
            raise ValueError(f"MicroNetConfig.bn_momentum={self.bn_momentum!r} must be in (0, 1]")
        if self.stride2_se not in STRIDE2_SE_MODES:
            raise ValueError(
                f"MicroNetConfig.stride2_se={self.stride2_se!r} is not supported; allowed: {', '.join(STRIDE2_SE_MODES)}"
            )

    def stages(self) -> tuple[StageConfig, ...]:
        """The docs/method.md §3.2 rows with the width/depth multipliers applied."""
        return tuple(
            StageConfig(s.expansion, scale_width(s.out_ch, self.width_mult), scale_depth(s.repeats, self.depth_mult), s.stride)
            for s in STAGES[self.version]
        )


class MicroNet(nn.Module):
    """Stem (conv 3×3 → BN → HSwish), 16 MicroBlocks, GAP → Dropout → Linear (docs/method.md §3.1–3.2).

    Attributes reproduce the released keys: ``conv1, bn1, layers[i], linear`` (docs/method.md §4.3).
    """

    def __init__(self, config: MicroNetConfig):
        super().__init__()
        self.config = config
        norm_layer = default_norm_layer(config.bn_momentum)
        stem = scale_width(STEM_CHANNELS, config.width_mult)
        self.conv1 = nn.Conv2d(3, stem, 3, stride=1, padding=1, bias=False)
        self.bn1 = norm_layer(stem)
        self.act1 = HSwish()
        blocks: list[nn.Module] = []
        in_ch = stem
        for stage in config.stages():
            for r in range(stage.repeats):
                expanded, hidden = block_widths(in_ch, stage.out_ch, stage.expansion)
                blocks.append(
                    MicroBlock(
                        in_ch,
                        stage.out_ch,
                        expanded=expanded,
                        se_hidden=hidden,
                        stride=stage.stride if r == 0 else 1,
                        stride2_se=config.stride2_se,
                        norm_layer=norm_layer,
                    )
                )
                in_ch = stage.out_ch
        self.layers = nn.Sequential(*blocks)
        self.pool = GlobalAvgPool2d()
        self.flatten = nn.Flatten(1)
        self.dropout = nn.Dropout(config.dropout)
        self.linear = nn.Linear(in_ch, config.num_classes)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The authors' initialisation (docs/method.md §3.5): He fan-out normal convs, N(0, 0.01²) linear."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # fan-out n = k·k·C_out; for the depthwise conv C_out = E (docs/method.md §3.5).
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.normal_(0.0, math.sqrt(2.0 / n))
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()  # γ = 1, β = 0, running mean 0 / var 1
            elif isinstance(m, nn.Linear):
                m.weight.normal_(0.0, 0.01)
                m.bias.zero_()

    @property
    def num_classes(self) -> int:
        return self.linear.out_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.act1(self.bn1(self.conv1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(self.flatten(self.pool(self.forward_features(x)))))


def _build(version: str, **options) -> MicroNet:
    return MicroNet(MicroNetConfig(version=version, **options))


@register_model("micronet_v1")
def micronet_v1(
    *,
    num_classes: int = 100,
    width_mult: float = 1.0,
    depth_mult: float = 1.0,
    dropout: float = 0.3,
    bn_momentum: float = 0.01,
    stride2_se: str = "discard",
) -> MicroNet:
    """MicroNet ver1 (e = 3; the 2nd-place 0.0054 entry), docs/method.md §3.2."""
    return _build(
        "ver1", num_classes=num_classes, width_mult=width_mult, depth_mult=depth_mult,
        dropout=dropout, bn_momentum=bn_momentum, stride2_se=stride2_se,
    )


@register_model("micronet_v2")
def micronet_v2(
    *,
    num_classes: int = 100,
    width_mult: float = 1.0,
    depth_mult: float = 1.0,
    dropout: float = 0.3,
    bn_momentum: float = 0.01,
    stride2_se: str = "discard",
) -> MicroNet:
    """MicroNet ver2 (e = 2.5; the 3rd-place 0.0056 entry), docs/method.md §3.2."""
    return _build(
        "ver2", num_classes=num_classes, width_mult=width_mult, depth_mult=depth_mult,
        dropout=dropout, bn_momentum=bn_momentum, stride2_se=stride2_se,
    )


# ---------------------------------------------------------------------------------------------------
# Weight groups (docs/method.md §4.5 rows): which role a parameter or module plays, from its name alone.

WEIGHT_GROUPS = ("stem", "expand", "depthwise", "project", "shortcut", "se_fc1", "se_fc2", "classifier", "bn")

_PREFIXES = ("_orig_mod.", "module.")  # torch.compile / DataParallel wrappers
_SUFFIX = re.compile(r"\.(weight|bias|mask|running_mean|running_var|num_batches_tracked)$")
_PATTERNS = (
    (re.compile(r"^conv1$"), "stem"),
    (re.compile(r"^layers\.\d+\.conv1$"), "expand"),
    (re.compile(r"^layers\.\d+\.conv2$"), "depthwise"),
    (re.compile(r"^layers\.\d+\.conv3$"), "project"),
    (re.compile(r"^layers\.\d+\.shortcut\.0$"), "shortcut"),
    (re.compile(r"^layers\.\d+\.fc1$"), "se_fc1"),
    (re.compile(r"^layers\.\d+\.fc2$"), "se_fc2"),
    (re.compile(r"^linear$"), "classifier"),
    (re.compile(r"^(bn1|layers\.\d+\.bn[123]|layers\.\d+\.shortcut\.1)$"), "bn"),
)


def weight_group(name: str) -> str:
    """Group of a MicroNet parameter/buffer/module name, e.g. ``"layers.3.conv2.weight"`` → ``"depthwise"``.

    Groups: stem, expand, depthwise, project, shortcut, se_fc1, se_fc2, classifier (the docs/method.md §4.5
    rows), plus ``bn`` for BatchNorm tensors. A name that is not part of a MicroNet raises ``ValueError``.
    """
    key = name
    for prefix in _PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix):]
    key = _SUFFIX.sub("", key)
    for pattern, group in _PATTERNS:
        if pattern.match(key):
            return group
    raise ValueError(f"{name!r} is not a MicroNet weight name; known groups: {', '.join(WEIGHT_GROUPS)}")
