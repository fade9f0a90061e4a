"""The squeeze-excitation + residual training kernels (micronet_lib/accel/se_kernel.py, csrc/train_kernels.cpp).

Each kernel against float64 ops, for channel counts whose rows fill whole vectors and ones that leave a
partial tile, one and two threads, float32 and bfloat16; then the whole autograd function against
float64 autograd through the SE module (outputs, gradients of u, the residual and the gate's four
parameters); then where it must not run (evaluation, no gradients, NCHW, hooks, a residual of another
dtype), and the one kind of hook it runs itself (the pruning masks'). The whole MicroNet step is in
tests/test_norm_kernel.py.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from micronet_lib.accel import norm_kernel, se_kernel
from micronet_lib.models.blocks import SqueezeExcite
from micronet_lib.pruning.masks import attach_mask

from test_norm_kernel import _close, kernel, threads  # noqa: F401  (fixtures)

# (N, C, H, W); a channels-last sample is H·W rows of C, walked k = 16 / gcd(C, 16) rows at a time:
# 5·7 = 35 rows leave a partial tile for every C here but 16 and 64.
SHAPES = [(3, 20, 5, 7), (2, 16, 4, 4), (2, 7, 5, 7), (4, 56, 6, 6), (2, 90, 5, 7)]


def _tensors(n, c, h, w, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    u, r, dy = (torch.randn(n, c, h, w, generator=gen).to(dtype).contiguous(memory_format=torch.channels_last)
                for _ in range(3))
    return u, r, dy, torch.rand(n, c, generator=gen), torch.randn(n, c, generator=gen)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"C{s[1]}" for s in SHAPES])
def test_each_kernel_matches_float64(kernel, threads, shape, dtype):
    ext = norm_kernel.extension()
    u, r, dy, g, d = _tensors(*shape, dtype, seed=shape[1])
    u64, dy64, g64, d64 = u.double(), dy.double(), g.double()[:, :, None, None], d.double()[:, :, None, None]
    _close(ext.se_pool(u), u64.mean((2, 3)), 1e-6)  # float32 sums of the stored values
    _close(ext.se_gate_grad(dy, u), (dy64 * u64).sum((2, 3)), 1e-6)
    out_tol = 1e-6 if dtype == torch.float32 else 2**-8  # one rounding into the storage dtype
    y, du = ext.se_scale(u, g, r), ext.se_input_grad(dy, u, g, d)
    for got in (y, du):
        assert got.dtype == dtype and got.is_contiguous(memory_format=torch.channels_last)
    _close(y, u64 * g64 + r.double(), out_tol)
    _close(du, dy64 * g64 + d64, out_tol)


def test_bad_input_is_refused_with_its_reason(kernel):
    ext = norm_kernel.extension()
    u, r, _, g, _ = _tensors(2, 20, 4, 4, torch.float32, seed=0)
    with pytest.raises(RuntimeError, match="channels-last"):
        ext.se_pool(u.contiguous())
    with pytest.raises(RuntimeError, match="residual must have the input's shape"):
        ext.se_scale(u, g, r[:1])
    with pytest.raises(RuntimeError, match="one value per sample and channel"):
        ext.se_scale(u, g[:, :5], r)


def _se(channels, hidden, seed):
    torch.manual_seed(seed)
    se = SqueezeExcite(nn.Conv2d(channels, hidden, 1), nn.Conv2d(hidden, channels, 1)).train()
    for fc in se._fcs:  # the SE's own modules are unregistered (the block owns them): train them explicitly
        fc.train()
    return se


def _float64(se):
    fc1, fc2 = (copy.deepcopy(fc).double() for fc in se._fcs)  # unregistered: .double() on the SE would miss them
    return SqueezeExcite(fc1, fc2).train()


def _grads(se, u, r, dy, run):
    u, r = u.detach().clone().requires_grad_(True), r.detach().clone().requires_grad_(True)
    params = [p for fc in se._fcs for p in (fc.weight, fc.bias)]
    y = run(u, r)
    return (y.detach(), *torch.autograd.grad(y, [u, r, *params], dy))


@pytest.mark.parametrize("shape", SHAPES, ids=[f"C{s[1]}" for s in SHAPES])
def test_float32_function_matches_float64_autograd(kernel, threads, shape):
    se = _se(shape[1], max(shape[1] // 4, 1), seed=shape[1])
    u, r, dy, _, _ = _tensors(*shape, torch.float32, seed=shape[1] + 1)
    assert se.kernel_applies(u)
    got = _grads(se, u, r, dy, se.forward_residual)
    se64 = _float64(se)
    want = _grads(se64, u.double(), r.double(), dy.double(), lambda a, b: se64(a) + b)
    for name, a, b in zip(("y", "du", "dr", "dw1", "db1", "dw2", "db2"), got, want):
        assert a.dtype == torch.float32, name
        _close(a, b, 1e-5)


def test_bfloat16_autocast_matches_float64_within_bf16_rounding(kernel, threads):
    se = _se(20, 5, seed=1)
    u, r, dy, _, _ = _tensors(8, 20, 8, 8, torch.bfloat16, seed=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert se.kernel_applies(u)
        got = _grads(se, u, r, dy, se.forward_residual)
    se64 = _float64(se)
    want = _grads(se64, u.double(), r.double(), dy.double(), lambda a, b: se64(a) + b)
    # y, du: the gate is computed in bf16 (as autocast's convs are) and the result rounded once;
    # parameter gradients: bf16 products summed in float32.
    for name, a, b, rel in zip(("y", "du", "dr", "dw1", "db1", "dw2", "db2"), got, want, (2**-6, 2**-6, 0, *[2**-5] * 4)):
        _close(a, b, rel)


def test_the_modules_run_where_the_kernel_must_not(kernel, monkeypatch):
    calls = []
    monkeypatch.setattr(se_kernel, "_ExciteResidualFunction",
                        type("Counted", (), {"apply": staticmethod(lambda *a: calls.append(1))}))
    se = _se(20, 5, seed=3)
    u, r, _, _, _ = _tensors(2, 20, 4, 4, torch.float32, seed=4)
    nchw = u.contiguous()
    expected = se(u) + r
    torch.testing.assert_close(se.forward_residual(nchw, r), expected)  # NCHW
    with torch.no_grad():  # e.g. BatchNorm re-estimation runs the model in training mode without gradients
        torch.testing.assert_close(se.forward_residual(u, r), expected)
    torch.testing.assert_close(se.forward_residual(u, r.double()), se(u) + r.double())  # ATen promotes: so do we
    with norm_kernel.aten_only():
        torch.testing.assert_close(se.forward_residual(u, r), expected)
    for fc in se._fcs:
        fc.eval()
    torch.testing.assert_close(se.forward_residual(u, r), expected)  # evaluation
    for fc in se._fcs:
        fc.train()
    handle = se._fcs[1].register_forward_pre_hook(lambda module, inputs: None)  # any hook but the masks'
    torch.testing.assert_close(se.forward_residual(u, r), expected)
    handle.remove()
    assert calls == []
    assert not SqueezeExcite(nn.Conv2d(20, 5, 1), nn.Conv2d(5, 20, 1), applied=False).kernel_applies(u)  # stride-2 gate


def test_pruning_masks_are_applied_as_a_module_call_would(kernel):
    """A masked gate conv (pruning cycles; the released pruned checkpoints) keeps the kernel: the masks'
    pre-hook zeroes the masked weights before the gate reads them, as calling the conv would."""
    se = _se(20, 5, seed=5)
    for fc, shape in zip(se._fcs, [(5, 20, 1, 1), (20, 5, 1, 1)]):
        attach_mask(fc, (torch.rand(shape, generator=torch.Generator().manual_seed(len(shape) + shape[0])) > 0.5).float())
    u, r, dy, _, _ = _tensors(4, 20, 6, 6, torch.float32, seed=6)
    assert se.kernel_applies(u)
    reference = _float64(se)
    with torch.no_grad():  # an optimiser step moved masked weights off zero; the next forward must zero them again
        se._fcs[0].weight.add_(1.0)
        reference._fcs[0].weight.add_(1.0)
    got = _grads(se, u, r, dy, se.forward_residual)
    assert torch.equal(se._fcs[0].weight * (1 - se._fcs[0].mask), torch.zeros_like(se._fcs[0].weight))
    want = _grads(reference, u.double(), r.double(), dy.double(), lambda a, b: reference(a) + b)
    for name, a, b in zip(("y", "du", "dr", "dw1", "db1", "dw2", "db2"), got, want):
        _close(a, b, 1e-5)


def test_a_second_backward_says_how_to_get_one(kernel):
    se = _se(20, 5, seed=7)
    u, r, dy, _, _ = _tensors(2, 20, 4, 4, torch.float32, seed=8)
    u.requires_grad_(True)
    y = se.forward_residual(u, r)
    y.backward(dy, retain_graph=True)
    with pytest.raises(RuntimeError, match="MICRONET_NORM_KERNEL=off"):
        y.backward(dy)


def test_a_squeeze_excitation_kernel_that_disagrees_turns_the_kernels_off(kernel, monkeypatch):
    """The once-per-process check covers these kernels too: a miscompiled build runs ATen everywhere."""
    built = norm_kernel.extension()

    class GateGradientOffByOnePercent:
        def __getattr__(self, name):
            return getattr(built, name)

        @staticmethod
        def se_gate_grad(dy, u):
            return built.se_gate_grad(dy, u) * 1.01

    monkeypatch.setattr(norm_kernel, "_load", lambda: (GateGradientOffByOnePercent(), None))
    norm_kernel._checked.cache_clear()
    try:
        assert norm_kernel.status().startswith("aten (disagrees with ATen (squeeze-excitation gate gradient")
        u = torch.randn(2, 20, 4, 4).contiguous(memory_format=torch.channels_last)
        assert not _se(20, 5, seed=9).kernel_applies(u)
    finally:
        norm_kernel._checked.cache_clear()
