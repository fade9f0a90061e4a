"""Squeeze-excitation with the residual sum after it, ``y = u ⊙ g + r``, in training as C++ kernels on
CPU channels-last tensors (``csrc/train_kernels.cpp``, built and checked by ``accel/norm_kernel.py``).

``applies(u, fc1, fc2, *modules)`` says whether the kernels may stand in: ``u`` a 4-D channels-last
float32 / bfloat16 CPU tensor in a training forward with gradients on, the gate's convs plain biased 1×1
convs, no hooks on any of the modules but the pruning masks' (which the kernel path runs itself), not
inside fx tracing, ``torch.compile`` or ``norm_kernel.aten_only()``, and the kernels built and checked.
``excite_residual`` then computes

    p = mean over H, W of u            (one pass over u)
    g = sigmoid(fc2(act(fc1(p))))      (on [N, C]: the 1×1 convs as the matrix products they are)
    y = u · g + r                      (one pass over u and r)

and, backward, ``Σ_HW dy·u`` (one pass over dy and u), the gate's gradients through autograd on its small
graph, then ``du = dy·g + dp / (H W)`` (one pass over dy). ``MicroBlock`` calls it for the blocks with a
residual; everywhere else (evaluation, NCHW, CUDA, the scorer, the stride-2 blocks) the modules run as
they are.

Why (issue #13, README "Benchmarks"): in ATen the broadcast multiplies by g run over a channels-last
tensor with an inner loop of C elements (20 on the 32×32 maps: not one whole vector), and the pool,
scaling, residual sum and their gradients read or write a whole tensor sixteen times where these do
eight. Forward + backward of the squeeze-excitation and residual sum, bf16, batch 128, two threads (AMD EPYC with
``avx512_bf16``; the gate's convs included): 9.2 → 3.4 ms for 20 channels at 32×32, 5.1 → 2.6 ms for
56 at 16×16, 2.3 → 1.6 ms for 80 at 8×8.
The same function up to rounding: float32 sums, and in bf16 ``u·g + r`` rounds once where ATen rounds
twice; the gate's values and gradients are ATen's own ops (autocast casts them as it casts the convs).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from micronet_lib.accel import norm_kernel

__all__ = ["applies", "residual_fits", "excite_residual"]

_DTYPES = (torch.float32, torch.bfloat16)


def _plain_pointwise(conv: nn.Module) -> bool:
    return (type(conv) is nn.Conv2d and conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.padding == (0, 0)
            and conv.dilation == (1, 1) and conv.groups == 1 and conv.bias is not None)


def _only_weight_hooks(conv: nn.Module) -> bool:
    """No hooks but forward pre-hooks that declare ``rewrites_weight_only`` (the pruning masks': they zero the
    masked weights in place and ignore the input), which :func:`excite_residual` runs itself."""
    return (not (conv._forward_hooks or nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks)
            and all(getattr(hook, "rewrites_weight_only", False) for hook in conv._forward_pre_hooks.values()))


def applies(u, fc1: nn.Module, fc2: nn.Module, *modules: nn.Module) -> bool:
    """Whether :func:`excite_residual` may stand in for ``se(u) + r`` (``modules``: the SE and its
    parameter-free parts, which must have no hooks at all)."""
    return (not norm_kernel.stepped_aside(u) and torch.is_grad_enabled()
            and u.dim() == 4 and u.dtype in _DTYPES and u.is_contiguous(memory_format=torch.channels_last)
            and _plain_pointwise(fc1) and _plain_pointwise(fc2) and all(m.training for m in (fc1, fc2, *modules))
            and _only_weight_hooks(fc1) and _only_weight_hooks(fc2)
            and not any(norm_kernel.has_forward_hooks(m) for m in modules) and norm_kernel.available())


class _ExciteResidualFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, residual, gate, w1, b1, w2, b2):
        kernels = norm_kernel.extension()
        pooled = kernels.se_pool(u).to(u.dtype)  # the dtype of the pool it replaces
        # The gate is small ([N, C]): build its graph on detached leaves, differentiate it in backward.
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_(True) for t in (pooled, w1, b1, w2, b2)]
            g = gate(*leaves)
        ctx.save_for_backward(u)
        ctx.gate_graph = (leaves, g)
        return kernels.se_scale(u, g.detach(), residual)

    @staticmethod
    @once_differentiable  # a second derivative (never taken in training) would need the kernels' own
    def backward(ctx, grad):
        kernels = norm_kernel.extension()
        (u,) = ctx.saved_tensors
        if ctx.gate_graph is None:
            raise RuntimeError("backward through the squeeze-excitation kernel ran twice (retain_graph=True); "
                               f"set {norm_kernel.ENV_SWITCH}=off to differentiate a training forward more than once")
        leaves, g = ctx.gate_graph
        ctx.gate_graph = None  # freed with the gate's graph, as autograd frees its own
        grad_g = kernels.se_gate_grad(grad, u).to(g.dtype).view_as(g)
        grad_pooled, *grad_params = torch.autograd.grad(g, leaves, grad_g)
        grad_u = kernels.se_input_grad(grad, u, g.detach(), grad_pooled.float() / (u.shape[2] * u.shape[3]))
        return (grad_u, grad, None, *grad_params)


def residual_fits(u: torch.Tensor, residual) -> bool:
    """Whether ``residual`` can be summed in the kernel: u's shape, dtype and device (ATen would promote others)."""
    return (isinstance(residual, torch.Tensor) and residual.shape == u.shape and residual.dtype == u.dtype
            and residual.device == u.device)


def excite_residual(u: torch.Tensor, residual: torch.Tensor, *, fc1: nn.Conv2d, fc2: nn.Conv2d, act: nn.Module,
                    sigmoid: nn.Module) -> torch.Tensor:
    """``u ⊙ sigmoid(fc2(act(fc1(GAP(u))))) + residual`` through the kernels; call only where :func:`applies`
    and :func:`residual_fits`."""

    def gate(pooled, w1, b1, w2, b2):
        return sigmoid(F.linear(act(F.linear(pooled, w1.flatten(1), b1)), w2.flatten(1), b2))

    for conv in (fc1, fc2):  # what calling the convs would do first (pruning masks)
        for hook in conv._forward_pre_hooks.values():
            hook(conv, ())
    return _ExciteResidualFunction.apply(u, residual, gate, fc1.weight, fc1.bias, fc2.weight, fc2.bias)
