"""MicroNet building blocks: hard-swish, squeeze-excitation, the inverted-residual MicroBlock.

docs/method.md §3.1. Module attribute names reproduce the authors' state_dict keys (docs/method.md §4.3):
``conv1, bn1, conv2, bn2, conv3, bn3, shortcut, fc1, fc2``, so released checkpoints load strictly.
Parameter-free helpers (activations, the squeeze-excitation wrapper) add no keys.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from micronet_lib.accel import norm_kernel, se_kernel

__all__ = ["HSwish", "SqueezeExcite", "MicroBlock", "STRIDE2_SE_MODES", "default_norm_layer", "depthwise_conv", "norm_act"]

# How the squeeze-excitation of a stride-2 block behaves (docs/method.md §3.1 "The stride-2 case", §11 item 2):
#   "discard": the authors' released code: the gate is computed and thrown away (faithful default; the
#              scorer sees the dead ops the authors counted, docs/method.md §9.1);
#   "skip":    the gate is not computed at all (same outputs, fewer ops; parameters kept so checkpoints load);
#   "apply":   the block drawn in the paper's figures: the gate scales the output (still no residual).
STRIDE2_SE_MODES = ("discard", "skip", "apply")


def default_norm_layer(momentum: float = 0.01) -> Callable[[int], nn.Module]:
    """BatchNorm2d with PyTorch momentum 0.01, i.e. TF/Keras decay 0.99 = 1 - 0.01 (docs/method.md §3.1)."""
    return partial(nn.BatchNorm2d, eps=1e-5, momentum=momentum)


class _StridedDepthwiseLowPrecision(torch.autograd.Function):
    """A strided depthwise conv (zero padding, no dilation, no bias) whose input gradient is a stride-1 one's.

    Why: on CPU (torch 2.14, oneDNN) the bf16 input gradient of a stride-2 depthwise 3×3 conv is about
    thirty times slower than the same conv's at stride 1 (66 ms vs 2 ms for 128×140×16×16 on 2 threads),
    while its bf16 forward and weight gradient are fast. The input gradient of a stride-s conv
    equals that of the stride-1 conv given the output gradient spread onto every s-th position of the
    stride-1 output, zeros between: the same products are summed, and the added zeros change no sum.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, stride: tuple[int, int], padding: tuple[int, int]):
        ctx.save_for_backward(x, weight)
        ctx.geometry = (list(stride), list(padding))
        return F.conv2d(x, weight, None, stride, padding, 1, weight.shape[0])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        stride, padding = ctx.geometry
        groups, dilation, no_output_padding = weight.shape[0], [1, 1], [0, 0]
        grad_x = grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = torch.ops.aten.convolution_backward(grad, x, weight, None, stride, padding, dilation, False,
                                                         no_output_padding, groups, [False, True, False])[1]
        if ctx.needs_input_grad[0]:
            n, c = grad.shape[:2]
            height, width = (x.shape[2 + i] + 2 * padding[i] - weight.shape[2 + i] + 1 for i in range(2))
            layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
            spread = torch.empty((n, c, height, width), dtype=grad.dtype, device=grad.device, memory_format=layout).zero_()
            spread[:, :, ::stride[0], ::stride[1]] = grad
            grad_x = torch.ops.aten.convolution_backward(spread, x, weight, None, [1, 1], padding, dilation, False,
                                                         no_output_padding, groups, [True, False, False])[0]
        return grad_x, grad_w, None, None


def depthwise_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)``; a *strided* depthwise conv trained under CPU autocast takes its input gradient at stride 1.

    Why: see ``_StridedDepthwiseLowPrecision`` (the bf16 input gradient of a strided depthwise conv is
    the slow one on CPU). Same dtypes as autocast's conv (input and weight in the autocast dtype), same
    values up to the order of summation. (These convs first trained in fp32 instead: as fast a gradient,
    but casts of the activations both ways cost more than the stride-1 gradient, issue #13.)
    Nothing changes outside CPU autocast training (fp32 runs, CUDA, inference, the scorer, fx tracing).
    """
    if (torch.is_autocast_enabled("cpu") and torch.is_grad_enabled() and conv.stride != (1, 1)
            and isinstance(x, torch.Tensor) and x.device.type == "cpu" and conv.bias is None
            and conv.padding_mode == "zeros" and conv.dilation == (1, 1) and not isinstance(conv.padding, str)
            and conv.groups == conv.in_channels == conv.out_channels):
        dtype = torch.get_autocast_dtype("cpu")
        with torch.autocast("cpu", enabled=False):
            return _StridedDepthwiseLowPrecision.apply(x.to(dtype), conv.weight.to(dtype), conv.stride, conv.padding)
    return conv(x)


def norm_act(bn: nn.Module, act: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
    """``act(bn(x))`` (``bn(x)`` when ``act`` is None).

    In CPU channels-last training, with hard-swish or no activation, this is one pass of our BatchNorm
    kernel each way instead of ATen's BatchNorm and hard-swish (``accel/norm_kernel.py`` says when it
    applies and why it is faster); everywhere else the modules run as they are.
    """
    if (act is None or isinstance(act, HSwish)) and norm_kernel.applies(bn, x, act):
        return norm_kernel.batch_norm_train(bn, x, hardswish=act is not None)
    y = bn(x)
    return y if act is None else act(y)


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

    def kernel_applies(self, u: torch.Tensor) -> bool:
        """Whether ``forward_residual`` may run the squeeze-excitation kernels (``accel/se_kernel.py``)."""
        fc1, fc2 = self._fcs
        return self.applied and se_kernel.applies(u, fc1, fc2, self, self.pool, self.act, self.sigmoid)

    def forward_residual(self, u: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """``self(u) + residual``: through the squeeze-excitation kernels where ``kernel_applies(u)`` (CPU
        channels-last training; issue #13) and the residual has u's dtype, through the modules otherwise."""
        if self.kernel_applies(u) and se_kernel.residual_fits(u, residual):
            fc1, fc2 = self._fcs
            return se_kernel.excite_residual(u, residual, fc1=fc1, fc2=fc2, act=self.act, sigmoid=self.sigmoid)
        return self(u) + residual

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
        out = norm_act(self.bn1, self.act1, self.conv1(x))
        out = norm_act(self.bn2, self.act2, depthwise_conv(self.conv2, out))
        u = norm_act(self.bn3, None, self.conv3(out))
        if self.has_residual and isinstance(self.se, SqueezeExcite) and self.se.kernel_applies(u):
            return self.se.forward_residual(u, self._shortcut(x))
        out = self.se(u)  # before the shortcut: the order the scorer's trace lists the ops in
        if self.has_residual:
            out = out + self._shortcut(x)
        return out

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """``self.shortcut(x)``; a conv + BatchNorm shortcut takes its BatchNorm through ``norm_act``.

        Why: the four shortcut BatchNorms (20, 56, 80, 96 channels) ran ATen's channels-last kernels, whose
        per-thread sums share cache lines on two threads (``accel/norm_kernel.py``): forward + backward of
        the four, bf16, batch 128, 13.7 ms per step on two threads against 4.3 ms through the kernel. The
        Sequential is called as such whenever a hook would see it (the scorer hooks every module), and a
        shortcut replaced by anything but the (conv, BN) pair built here runs as it is.
        """
        if (isinstance(self.shortcut, nn.Sequential) and len(self.shortcut) == 2
                and not norm_kernel.has_forward_hooks(self.shortcut)):
            conv, bn = self.shortcut
            return norm_act(bn, None, conv(x))
        return self.shortcut(x)

    def extra_repr(self) -> str:
        return (
            f"in_ch={self.in_ch}, out_ch={self.out_ch}, expanded={self.expanded}, se_hidden={self.se_hidden}, "
            f"stride={self.stride}, has_residual={self.has_residual}, se_applied={self.se_applied}"
        )
