"""The faster CPU training layers, put into a built model: ``accelerate(model)``.

The paper's blocks (:mod:`micronet_lib.models.blocks`) are plain PyTorch. ``accelerate`` gives every
``MicroBlock`` and ``MicroNet`` of a built model a forward that runs the same steps with
:func:`norm_act` (BatchNorm + hard-swish through the C++ kernel of :mod:`.norm_kernel` where it
applies) and :func:`depthwise_conv` (the strided depthwise conv's bf16 input gradient taken at stride 1).
The classes, module tree, parameter and buffer names, state-dict keys and hooks are those of the plain
model: only the forward changes, and it computes the same function up to float rounding. ``plain_layers``
undoes it. With ``MICRONET_ACCEL=0`` (:func:`micronet_lib.accel.enabled`) ``accelerate`` leaves the
model as it is. Training calls it when the model is built (``train.setup.build_training_model``).
"""

from __future__ import annotations

import types

import torch
import torch.nn as nn
import torch.nn.functional as F

from micronet_lib.accel import enabled, norm_kernel
from micronet_lib.models.blocks import HSwish, MicroBlock
from micronet_lib.models.micronet import MicroNet

__all__ = ["accelerate", "is_accelerated", "plain_layers", "norm_act", "depthwise_conv"]


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
    kernel each way instead of ATen's BatchNorm and hard-swish (:mod:`.norm_kernel` says when it
    applies and why it is faster); everywhere else (evaluation, NCHW, CUDA, float64, hooks, fx tracing)
    the modules run as they are.
    """
    if (act is None or isinstance(act, HSwish)) and norm_kernel.applies(bn, x, act):
        return norm_kernel.batch_norm_train(bn, x, hardswish=act is not None)
    y = bn(x)
    return y if act is None else act(y)


def _block_forward(block: MicroBlock, x: torch.Tensor) -> torch.Tensor:
    """``MicroBlock.forward``'s steps, in the same order, with the BatchNorms (+ the hard-swish after
    them) through :func:`norm_act` and the depthwise conv through :func:`depthwise_conv`."""
    out = norm_act(block.bn1, block.act1, block.conv1(x))
    out = norm_act(block.bn2, block.act2, depthwise_conv(block.conv2, out))
    u = norm_act(block.bn3, None, block.conv3(out))
    out = block.se(u)
    if block.has_residual:
        out = out + _shortcut(block, x)
    return out


def _shortcut(block: MicroBlock, x: torch.Tensor) -> torch.Tensor:
    """``block.shortcut(x)``; a conv + BatchNorm shortcut takes its BatchNorm through ``norm_act``.

    Why: the four shortcut BatchNorms (20, 56, 80, 96 channels) ran ATen's channels-last kernels, whose
    per-thread sums share cache lines on two threads (:mod:`.norm_kernel`): forward + backward of
    the four, bf16, batch 128, 13.7 ms per step on two threads against 4.3 ms through the kernel. The
    Sequential is called as such whenever a hook would see it (the scorer hooks every module), and a
    shortcut replaced by anything but the (conv, BN) pair built here runs as it is.
    """
    if (isinstance(block.shortcut, nn.Sequential) and len(block.shortcut) == 2
            and not norm_kernel.has_forward_hooks(block.shortcut)):
        conv, bn = block.shortcut
        return norm_act(bn, None, conv(x))
    return block.shortcut(x)


def _stem_features(net: MicroNet, x: torch.Tensor) -> torch.Tensor:
    """``MicroNet.forward_features`` with the stem BatchNorm + hard-swish through :func:`norm_act`."""
    return net.layers(norm_act(net.bn1, net.act1, net.conv1(x)))


# The method each MicroNet part runs on the kernel path. Bound to the instance (not a subclass), so the
# module keeps its class: the scorer's conventions, the mode cache key and every isinstance/type check
# see the paper's MicroBlock and MicroNet.
_KERNEL_METHODS = {MicroBlock: ("forward", _block_forward), MicroNet: ("forward_features", _stem_features)}


def accelerate(model: nn.Module) -> nn.Module:
    """``model`` (in place) with its MicroNet blocks and stem on the kernel path; unchanged when the
    accel layer is off (``MICRONET_ACCEL=0``) or the model has no MicroNet parts."""
    if enabled():
        for module in model.modules():
            for cls, (name, method) in _KERNEL_METHODS.items():
                if isinstance(module, cls):
                    setattr(module, name, types.MethodType(method, module))
    return model


def is_accelerated(module: nn.Module) -> bool:
    """Whether ``module`` runs a kernel-path method put there by :func:`accelerate`."""
    return any(getattr(module.__dict__.get(name), "__func__", None) is method
               for name, method in _KERNEL_METHODS.values())


def plain_layers(model: nn.Module) -> nn.Module:
    """``model`` (in place) with the plain ``MicroBlock`` / ``MicroNet`` methods again (undoes :func:`accelerate`)."""
    for module in model.modules():
        for name, method in _KERNEL_METHODS.values():
            if getattr(module.__dict__.get(name), "__func__", None) is method:
                del module.__dict__[name]
    return model
