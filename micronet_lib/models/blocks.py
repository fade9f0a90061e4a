"""MicroNet building blocks: hard-swish, squeeze-excitation, the inverted-residual MicroBlock.

docs/method.md §3.1. Plain PyTorch layers: the faster CPU training path (the BatchNorm kernel) is put
into a built model by ``micronet_lib.accel.kernel_blocks.accelerate``, never decided here.
Module attribute names reproduce the authors' state_dict keys (docs/method.md §4.3):
``conv1, bn1, conv2, bn2, conv3, bn3, shortcut, fc1, fc2``, so released checkpoints load strictly.
Parameter-free helpers (activations, the squeeze-excitation wrapper) add no keys.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["HSwish", "SqueezeExcite", "MicroBlock", "GlobalAvgPool2d", "STRIDE2_SE_MODES", "default_norm_layer"]

# How the squeeze-excitation of a stride-2 block behaves (docs/method.md §3.1 "The stride-2 case", §11 item 2):
#   "discard": the authors' released code: the gate is computed and thrown away (faithful default; the
#              scorer sees the dead ops the authors counted, docs/method.md §9.1);
#   "skip":    the gate is not computed at all (same outputs, fewer ops; parameters kept so checkpoints load);
#   "apply":   the block drawn in the paper's figures: the gate scales the output (still no residual).
STRIDE2_SE_MODES = ("discard", "skip", "apply")


def default_norm_layer(momentum: float = 0.01) -> Callable[[int], nn.Module]:
    """BatchNorm2d with PyTorch momentum 0.01, i.e. TF/Keras decay 0.99 = 1 - 0.01 (docs/method.md §3.1)."""
    return partial(nn.BatchNorm2d, eps=1e-5, momentum=momentum)


class GlobalAvgPool2d(nn.AdaptiveAvgPool2d):
    """``AdaptiveAvgPool2d(1)`` computed as one average pool over the whole map (same values).

    Why: torch implements a 1×1 adaptive pool as ``mean`` over H, W. Its bf16 channels-last forward is
    3-4x slower than the pooling kernel (2.9 vs 1.0 ms for 256×20×32×32 on one core; the SE pools 17
    times per forward), and its backward hands a channels-last input an NCHW gradient, which, summed
    with the channels-last gradient of u·g, ran a strided add at a tenth of the speed. The pooling
    kernel keeps channels-last both ways. Being an ``AdaptiveAvgPool2d``, the scorer counts it as
    before, and it has no state_dict keys.
    """

    def __init__(self):
        super().__init__(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, x.shape[-2:])


class HSwish(nn.Module):
    """h(x) = x · ReLU6(x + 3) / 6 (docs/method.md §3.1). The scorer charges 1 add + 4 mults per element (§9.1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One fused kernel; it evaluates the same expression as the authors' x * relu6(x + 3) / 6.
        return F.hardswish(x)


class SqueezeExcite(nn.Module):
    """Squeeze-excitation on the projected output u (docs/method.md §3.1 step 4).

    g = sigmoid(fc2(HSwish(fc1(GAP(u))))); ``forward`` returns u ⊙ g when ``applied`` is true, else u
    unchanged after computing g (the authors' stride-2 behaviour). ``gate(u)`` returns g alone.

    ``fc1``/``fc2`` are *owned by the enclosing block* (the released keys are ``layers.i.fc1``, not
    ``layers.i.se.fc1``), so this module only keeps unregistered references to them: it adds no
    state_dict keys and no parameters of its own, and hooks on ``fc1``/``fc2`` still fire.
    """

    def __init__(self, fc1: nn.Conv2d, fc2: nn.Conv2d, *, applied: bool = True, act_layer: Callable[[], nn.Module] = HSwish):
        super().__init__()
        self._fcs = (fc1, fc2)  # a tuple is not registered by nn.Module: see the class docstring
        self.applied = bool(applied)
        self.pool = GlobalAvgPool2d()
        self.act = act_layer()
        self.sigmoid = nn.Sigmoid()

    @property
    def channels(self) -> int:
        return self._fcs[0].in_channels

    @property
    def hidden(self) -> int:
        return self._fcs[0].out_channels

    def gate(self, u: torch.Tensor) -> torch.Tensor:
        fc1, fc2 = self._fcs
        return self.sigmoid(fc2(self.act(fc1(self.pool(u)))))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        g = self.gate(u)
        return u * g if self.applied else u

    def extra_repr(self) -> str:
        return f"channels={self.channels}, hidden={self.hidden}, applied={self.applied}"


class MicroBlock(nn.Module):
    """Inverted-residual block MicroBlock(C_in, C_out, e, s) of docs/method.md §3.1.

    expand 1×1 (C_in→E) → BN → HSwish → depthwise 3×3 stride s → BN → HSwish → project 1×1 (E→C_out)
    → BN = u; squeeze-excitation on u with hidden width H; then

    * s = 1: y = u ⊙ g + shortcut(x), shortcut = identity if C_in = C_out else 1×1 conv + BN;
    * s = 2: y = u (no residual, no shortcut); the gate follows ``stride2_se`` (see ``STRIDE2_SE_MODES``).

    ``expanded`` (E) and ``se_hidden`` (H) are computed by the caller (``micronet.block_widths``), so the
    width arithmetic lives in one place. Metadata for callers: ``stride``, ``has_residual``, ``se_applied``,
    ``se_computed``.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        expanded: int,
        se_hidden: int,
        stride: int,
        stride2_se: str = "discard",
        norm_layer: Callable[[int], nn.Module] | None = None,
        act_layer: Callable[[], nn.Module] = HSwish,
    ):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride={stride!r} is not supported; allowed: 1, 2")
        if stride2_se not in STRIDE2_SE_MODES:
            raise ValueError(f"stride2_se={stride2_se!r} is not supported; allowed: {', '.join(STRIDE2_SE_MODES)}")
        for field, value in (("in_ch", in_ch), ("out_ch", out_ch), ("expanded", expanded), ("se_hidden", se_hidden)):
            if int(value) < 1:
                raise ValueError(f"{field}={value!r} must be a positive channel count")
        norm_layer = norm_layer or default_norm_layer()
        self.in_ch, self.out_ch, self.expanded, self.se_hidden = in_ch, out_ch, expanded, se_hidden
        self.stride = stride
        self.has_residual = stride == 1
        self.se_computed = stride == 1 or stride2_se != "skip"
        self.se_applied = stride == 1 or stride2_se == "apply"

        self.conv1 = nn.Conv2d(in_ch, expanded, 1, bias=False)
        self.bn1 = norm_layer(expanded)
        self.act1 = act_layer()
        self.conv2 = nn.Conv2d(expanded, expanded, 3, stride=stride, padding=1, groups=expanded, bias=False)
        self.bn2 = norm_layer(expanded)
        self.act2 = act_layer()
        self.conv3 = nn.Conv2d(expanded, out_ch, 1, bias=False)
        self.bn3 = norm_layer(out_ch)
        # Shortcut convs only where the authors have them: stride 1 and a width change (docs/method.md §3.1);
        # nn.Identity adds no keys, so `layers.i.shortcut.{0,1}` exist exactly for blocks 0, 4, 13, 15.
        if self.has_residual and in_ch != out_ch:
            self.shortcut: nn.Module = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, bias=False), norm_layer(out_ch))
        else:
            self.shortcut = nn.Identity()
        # The SE convs are biased and exist in every block, dead or not (docs/method.md §3.1, §3.4).
        self.fc1 = nn.Conv2d(out_ch, se_hidden, 1, bias=True)
        self.fc2 = nn.Conv2d(se_hidden, out_ch, 1, bias=True)
        self.se: nn.Module = (
            SqueezeExcite(self.fc1, self.fc2, applied=self.se_applied, act_layer=act_layer)
            if self.se_computed
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        u = self.bn3(self.conv3(out))
        out = self.se(u)  # before the shortcut: the order the scorer's trace lists the ops in
        if self.has_residual:
            out = out + self.shortcut(x)
        return out

    def extra_repr(self) -> str:
        return (
            f"in_ch={self.in_ch}, out_ch={self.out_ch}, expanded={self.expanded}, se_hidden={self.se_hidden}, "
            f"stride={self.stride}, has_residual={self.has_residual}, se_applied={self.se_applied}"
        )
