"""Inference-only fusion of a convolution with the hard-swish after it into one oneDNN call (CPU).

Why: after BatchNorm folding, a ver2 evaluation forward on a CPU spends most of its time in the
convolutions and, next, in the 49 ``hardswish`` passes over their outputs (each a full read and write
of an activation tensor). oneDNN applies the activation as a *post-op* of the convolution, on the
accumulator before the result is stored: one pass instead of two. Measured with ``micronet bench eval``
on a 2-core AMD EPYC with avx512_bf16: 3.7x -> 4.0x the authors-style forward at one thread
(docs/performance.md, "What each piece buys").

The call is ``torch.ops.mkldnn._convolution_pointwise``, the op torch.compile's CPU backend emits for
the same pattern; it is not a documented eager API, so :func:`fusion_available` checks once per
process and dtype that it exists and computes ``hardswish(conv2d(x))`` on a small probe, and every
caller falls back to the unfused graph when it does not. Training never uses it (the op has no
backward).

What changes numerically: the activation is applied before the result is rounded to the output type,
so in bf16 the fused output is *more* precise than conv-then-hardswish (one rounding instead of two);
in fp32 the two differ by float rounding only.
"""

from __future__ import annotations

import functools
import logging

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from micronet_lib.accel import enabled

__all__ = ["ConvHardswish", "fusion_available", "fuse_conv_hardswish"]

log = logging.getLogger(__name__)

FUSABLE_DTYPES = (torch.float32, torch.bfloat16)


def _pointwise_op():
    return getattr(getattr(torch.ops, "mkldnn", None), "_convolution_pointwise", None)


class ConvHardswish(nn.Module):
    """``hardswish(conv(x))`` as one oneDNN convolution with a hard-swish post-op (inference only).

    Holds a detached copy of the conv's weight and bias in ``dtype`` (bf16 for a bf16 evaluation: the
    op is outside autocast, so the weights are cast once here instead of at every call) and in the
    memory format the inputs will have.
    """

    def __init__(self, conv: nn.Conv2d, *, dtype: torch.dtype = torch.float32, channels_last: bool = False):
        super().__init__()
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(f"{conv}: only numeric zero padding is fused")
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.register_buffer("weight", conv.weight.detach().to(dtype).contiguous(memory_format=fmt))
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().to(dtype))
        self.padding, self.stride = list(conv.padding), list(conv.stride)
        self.dilation, self.groups = list(conv.dilation), conv.groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _pointwise_op()(x.to(self.weight.dtype), self.weight, self.bias, self.padding, self.stride,
                               self.dilation, self.groups, "hardswish", [], "")

    def extra_repr(self) -> str:
        return (f"{self.weight.shape[1] * self.groups}, {self.weight.shape[0]}, kernel_size={tuple(self.weight.shape[2:])}, "
                f"stride={tuple(self.stride)}, groups={self.groups}, dtype={self.weight.dtype}")


def fusion_available(dtype: torch.dtype = torch.float32) -> bool:
    """True where the accel layer is on and the fused op exists here and matches ``hardswish(conv2d(x))``
    in ``dtype`` on a probe."""
    return enabled() and _probe(dtype)


@functools.lru_cache(maxsize=None)
def _probe(dtype: torch.dtype) -> bool:
    if dtype not in FUSABLE_DTYPES or _pointwise_op() is None or not torch.backends.mkldnn.is_available():
        return False
    gen = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=True)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen))
        conv.bias.copy_(torch.randn(8, generator=gen))
    x = torch.randn(2, 8, 6, 6, generator=gen).to(dtype).contiguous(memory_format=torch.channels_last)
    try:
        with torch.inference_mode():
            want = F.hardswish(F.conv2d(x.float(), conv.weight, conv.bias, conv.stride, conv.padding, 1, 8))
            got = ConvHardswish(conv, dtype=dtype, channels_last=True)(x).float()
    except RuntimeError as exc:  # op present but not built for this dtype/CPU
        log.info("conv+hardswish fusion unavailable for %s: %s", dtype, exc)
        return False
    tol = 1e-4 if dtype == torch.float32 else 0.1
    ok = got.shape == want.shape and bool(torch.allclose(got, want, rtol=tol, atol=tol))
    if not ok:
        log.warning("conv+hardswish fusion disagrees with conv2d+hardswish in %s here; not used", dtype)
    return ok


def fuse_conv_hardswish(graph_module: torch.fx.GraphModule, *, dtype: torch.dtype = torch.float32,
                        channels_last: bool = False) -> int:
    """Replace, in place, every ``Conv2d`` whose only user is ``F.hardswish`` by a :class:`ConvHardswish`.

    ``graph_module`` is an eval-mode fx graph (e.g. from ``evaluate.fold_batchnorm``); returns how many
    pairs were fused. Convs with other users (a shortcut reading the same output) are left alone.
    """
    modules = dict(graph_module.named_modules())
    fused = 0
    for node in list(graph_module.graph.nodes):
        if not (node.op == "call_function" and node.target is F.hardswish and not node.kwargs.get("inplace")):
            continue
        conv_node = node.args[0]
        if not (isinstance(conv_node, torch.fx.Node) and conv_node.op == "call_module" and len(conv_node.users) == 1):
            continue
        conv = modules[conv_node.target]
        if type(conv) is not nn.Conv2d or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            continue
        name = f"{conv_node.target.replace('.', '_')}_hardswish"
        graph_module.add_submodule(name, ConvHardswish(conv, dtype=dtype, channels_last=channels_last))
        with graph_module.graph.inserting_after(node):
            replacement = graph_module.graph.call_module(name, conv_node.args)
        node.replace_all_uses_with(replacement)
        graph_module.graph.erase_node(node)
        graph_module.graph.erase_node(conv_node)
        fused += 1
    if fused:
        graph_module.graph.lint()
        graph_module.delete_all_unused_submodules()
        graph_module.recompile()
    return fused
