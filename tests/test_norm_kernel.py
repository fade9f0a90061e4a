"""The BatchNorm + hard-swish training kernel (micronet_lib/accel/norm_kernel.py, csrc/train_kernels.cpp).

Checked against float64 autograd through ATen's own ops: outputs, input/weight/bias gradients and the
running statistics, for channel counts whose rows fill whole vectors and ones that leave a remainder,
row counts that leave a partial tile, one and two threads, float32 and bfloat16. Then: a whole MicroNet
training step on the kernel path (``accel.kernel_blocks.accelerate``) equals the ATen step, and
everything the kernel must not touch (evaluation, NCHW, hooks, fx tracing, an unavailable build) runs
the modules as before.

A machine without a C++ compiler skips these tests locally; CI sets MICRONET_REQUIRE_KERNEL=1, so
there a kernel that cannot be built is a failure, not a skip.
"""

from __future__ import annotations

import copy
import os
import time

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from micronet_lib.accel import norm_kernel
from micronet_lib.accel.kernel_blocks import accelerate, norm_act
from micronet_lib.models import build_model
from micronet_lib.models.blocks import HSwish

REQUIRE = os.environ.get("MICRONET_REQUIRE_KERNEL", "") not in ("", "0", "false", "False")


@pytest.fixture
def kernel():
    reason = norm_kernel._checked()
    if reason is not None:
        if REQUIRE:
            pytest.fail(f"the BatchNorm kernel is unavailable: {reason} (MICRONET_REQUIRE_KERNEL is set)")
        pytest.skip(f"the BatchNorm kernel is unavailable here: {reason}")
    return norm_kernel


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


def _case(n, c, h, w, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, c, h, w, generator=gen) * 2 + 0.7).to(dtype).contiguous(memory_format=torch.channels_last)
    weight = torch.rand(c, generator=gen) * 1.5 + 0.25
    bias = torch.randn(c, generator=gen)
    dy = torch.randn(n, c, h, w, generator=gen).to(dtype).contiguous(memory_format=torch.channels_last)
    return x, weight, bias, dy


def _reference(x, weight, bias, dy, *, act, momentum):
    """float64 autograd through F.batch_norm (+ F.hardswish) on the same (already rounded) values."""
    x64 = x.double().requires_grad_(True)
    w64, b64 = weight.double().requires_grad_(True), bias.double().requires_grad_(True)
    rm, rv = torch.zeros(x.shape[1], dtype=torch.float64), torch.ones(x.shape[1], dtype=torch.float64)
    z = F.batch_norm(x64, rm, rv, w64, b64, training=True, momentum=momentum, eps=1e-5)
    y = F.hardswish(z) if act else z
    gx, gw, gb = torch.autograd.grad(y, (x64, w64, b64), dy.double())
    return z.detach(), y.detach(), gx, gw, gb, rm, rv


def _kernel_side(x, weight, bias, dy, *, act, momentum):
    bn = nn.BatchNorm2d(x.shape[1], momentum=momentum)
    with torch.no_grad():
        bn.weight.copy_(weight)
        bn.bias.copy_(bias)
    xk = x.clone().requires_grad_(True)
    assert norm_kernel.applies(bn, xk)
    y = norm_kernel.batch_norm_train(bn, xk, hardswish=act)
    gx, gw, gb = torch.autograd.grad(y, (xk, bn.weight, bn.bias), dy)
    return y, gx, gw, gb, bn


def _close(actual, expected, rel):
    scale = expected.abs().max().item()
    err = (actual.double() - expected).abs().max().item()
    assert err <= rel * scale, f"max |Δ| {err:.3g} > {rel:g} × {scale:.3g}"


# rows = N·H·W: 70 leaves a partial tile for every C below (k = 16/gcd(C, 16) rows per tile)
SHAPES = [(2, 3, 5, 7), (2, 20, 5, 7), (2, 50, 5, 7), (4, 64, 8, 8), (3, 90, 4, 4)]


@pytest.mark.parametrize("act", [False, True], ids=["bn", "bn+hswish"])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"C{s[1]}" for s in SHAPES])
def test_float32_matches_float64_autograd(kernel, threads, shape, act):
    x, weight, bias, dy = _case(*shape, torch.float32, seed=shape[1])
    z, y_ref, gx_ref, gw_ref, gb_ref, rm, rv = _reference(x, weight, bias, dy, act=act, momentum=0.1)
    # hard-swish's slope jumps at ±3: an input within rounding of it would flip the branch, not test the kernel
    assert (z.abs() - 3).abs().min() > 1e-4
    y, gx, gw, gb, bn = _kernel_side(x, weight, bias, dy, act=act, momentum=0.1)
    assert y.dtype == torch.float32 and y.is_contiguous(memory_format=torch.channels_last)
    _close(y, y_ref, 1e-5)
    _close(gx, gx_ref, 1e-5)
    _close(gw, gw_ref, 1e-5)
    _close(gb, gb_ref, 1e-5)
    _close(bn.running_mean, rm, 1e-5)
    _close(bn.running_var, rv, 1e-5)
    assert int(bn.num_batches_tracked) == 1


@pytest.mark.parametrize("act", [False, True], ids=["bn", "bn+hswish"])
def test_bfloat16_matches_float64_within_bf16_rounding(kernel, threads, act):
    x, weight, bias, dy = _case(8, 20, 6, 6, torch.bfloat16, seed=3)
    z, y_ref, gx_ref, gw_ref, gb_ref, rm, rv = _reference(x, weight, bias, dy, act=act, momentum=0.1)
    assert (z.abs() - 3).abs().min() > 1e-4
    y, gx, gw, gb, bn = _kernel_side(x, weight, bias, dy, act=act, momentum=0.1)
    assert y.dtype == torch.bfloat16 and gx.dtype == torch.bfloat16 and gw.dtype == torch.float32
    _close(y, y_ref, 2**-7)  # one bf16 rounding of the output
    _close(gx, gx_ref, 2**-7)
    _close(gw, gw_ref, 1e-5)  # float32 sums of the (exact) bf16 inputs
    _close(gb, gb_ref, 1e-5)
    _close(bn.running_mean, rm, 1e-5)


def test_cumulative_average_when_momentum_is_none(kernel):
    x, weight, bias, dy = _case(2, 20, 4, 4, torch.float32, seed=5)
    bn_ref = nn.BatchNorm2d(20, momentum=None)
    bn = copy.deepcopy(bn_ref)
    for step in range(3):
        xs = x * (step + 1)
        bn_ref(xs)
        norm_kernel.batch_norm_train(bn, xs)
    assert int(bn.num_batches_tracked) == int(bn_ref.num_batches_tracked) == 3
    torch.testing.assert_close(bn.running_mean, bn_ref.running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var, bn_ref.running_var, rtol=1e-5, atol=1e-6)


def _step(model, x, y):
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_micronet_training_step_equals_the_aten_step(kernel, monkeypatch):
    torch.manual_seed(0)
    model = accelerate(build_model("micronet_v2", num_classes=10, dropout=0.0)).train().to(memory_format=torch.channels_last)
    aten = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(6, 3, 32, 32, generator=gen).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (6,), generator=gen)
    calls = []
    real = norm_kernel.batch_norm_train
    monkeypatch.setattr(norm_kernel, "batch_norm_train", lambda *a, **k: calls.append(1) or real(*a, **k))
    loss, grads = _step(model, x, y)
    assert len(calls) == 1 + 3 * 16 + 4  # the stem, every block's three BatchNorms, the 4 shortcut BatchNorms
    with norm_kernel.aten_only():
        loss_ref, grads_ref = _step(aten, x, y)
    torch.testing.assert_close(loss, loss_ref, rtol=1e-5, atol=1e-6)
    assert grads.keys() == grads_ref.keys()
    for name in grads:  # (+1e-6: some gradients are rounding noise around 0, e.g. a BN bias another BN follows)
        scale = grads_ref[name].abs().max().item()
        assert (grads[name] - grads_ref[name]).abs().max().item() <= 1e-3 * scale + 1e-6, name
    for (name, buf), (_, ref) in zip(model.named_buffers(), aten.named_buffers()):
        torch.testing.assert_close(buf.float(), ref.float(), rtol=1e-4, atol=1e-5, msg=name)


def test_the_modules_run_as_before_outside_channels_last_training(kernel, monkeypatch):
    calls = []
    monkeypatch.setattr(norm_kernel, "batch_norm_train", lambda *a, **k: calls.append(1))
    bn, act = nn.BatchNorm2d(20), HSwish()
    x = torch.randn(2, 20, 4, 4)
    cl = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(norm_act(bn, act, x), F.hardswish(bn(x)))  # NCHW
    bn.eval()
    torch.testing.assert_close(norm_act(bn, act, cl), F.hardswish(bn(cl)))  # evaluation
    bn.train()
    norm_act(bn, nn.ReLU(), cl)  # an activation the kernel does not have
    norm_act(copy.deepcopy(bn).double(), act, cl.double())  # float64 (tests/test_fidelity.py trains in it)
    norm_act(copy.deepcopy(bn).bfloat16(), act, cl.bfloat16())  # a model cast to bf16 whole (kernel: fp32 γ, β)
    seen = []
    handle = bn.register_forward_hook(lambda *a: seen.append(1))  # e.g. the scorer's counting hooks
    norm_act(bn, act, cl)
    handle.remove()
    with norm_kernel.aten_only():  # what `micronet bench train --aten-bn` times
        norm_act(bn, act, cl)
    assert norm_kernel.applies(bn, cl, act)  # and outside the block the kernel is back
    assert calls == [] and seen == [1]
    traced = torch.fx.symbolic_trace(accelerate(build_model("micronet_v2", num_classes=10)).train())
    assert any(node.op == "call_module" and node.target == "layers.0.bn1" for node in traced.graph.nodes)


def test_a_hooked_shortcut_runs_as_its_module(kernel, monkeypatch):
    """The shortcut's BatchNorm takes the kernel only while nothing hooks the shortcut Sequential (the
    scorer hooks every module and must see it called)."""
    block = accelerate(build_model("micronet_v2", num_classes=10)).train().layers[0]
    assert isinstance(block.shortcut, nn.Sequential)
    x = torch.randn(2, block.in_ch, 8, 8).contiguous(memory_format=torch.channels_last)
    calls = []
    real = norm_kernel.batch_norm_train
    monkeypatch.setattr(norm_kernel, "batch_norm_train", lambda bn, *a, **k: calls.append(bn) or real(bn, *a, **k))
    plain = block(x)
    assert block.shortcut[1] in calls
    calls.clear()
    seen = []
    handle = block.shortcut.register_forward_hook(lambda *a: seen.append(1))
    hooked = block(x)
    handle.remove()
    assert seen == [1] and block.shortcut[1] not in calls and len(calls) == 3
    torch.testing.assert_close(hooked, plain, rtol=1e-4, atol=1e-5)
    block.shortcut.append(nn.Identity())  # a shortcut other than the (conv, BN) pair: run as it is
    calls.clear()
    torch.testing.assert_close(block(x), plain, rtol=1e-4, atol=1e-5)
    assert block.shortcut[1] not in calls and len(calls) == 3


def test_an_unavailable_kernel_falls_back_and_says_why(monkeypatch):
    monkeypatch.setattr(norm_kernel, "_load", lambda: (None, "no C++ compiler (c++) on PATH"))
    norm_kernel._checked.cache_clear()
    try:
        assert not norm_kernel.available()
        assert norm_kernel.status() == "aten (no C++ compiler (c++) on PATH)"
        bn, act = nn.BatchNorm2d(20), HSwish()
        ref = copy.deepcopy(bn)
        x = torch.randn(2, 20, 4, 4).contiguous(memory_format=torch.channels_last)
        assert not norm_kernel.applies(bn, x, act)
        assert torch.equal(norm_act(bn, act, x), F.hardswish(ref(x)))
        assert torch.equal(bn.running_var, ref.running_var)
    finally:
        norm_kernel._checked.cache_clear()


def test_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setenv(norm_kernel.ENV_SWITCH, "off")
    norm_kernel._load.cache_clear()
    norm_kernel._checked.cache_clear()
    try:
        assert norm_kernel.status() == f"aten (switched off by {norm_kernel.ENV_SWITCH})"
    finally:
        monkeypatch.delenv(norm_kernel.ENV_SWITCH)
        norm_kernel._load.cache_clear()
        norm_kernel._checked.cache_clear()


def test_a_run_records_which_batchnorm_trained_it(kernel, tmp_path, monkeypatch, caplog):
    from micronet_lib.train import TrainConfig, fit

    monkeypatch.setenv("MICRONET_CACHE", str(tmp_path / "cache"))
    tiny = dict(cycles=1, epochs_per_cycle=2, prune_rates=None, train_per_class=8, val_per_class=4, test_per_class=4,
                bn_recalibrate_images=0, precision="fp32")
    nchw = fit(TrainConfig.from_profile("smoke", **tiny, memory_format="contiguous"), tmp_path / "nchw", progress=False)
    assert nchw["execution"]["norm_kernel"] == "aten (NCHW training)"
    config = TrainConfig.from_profile("smoke", **{**tiny, "epochs_per_cycle": 1}, memory_format="channels_last")
    run = tmp_path / "cl"
    assert fit(config, run, progress=False)["execution"]["norm_kernel"] == norm_kernel.FUSED
    # The same run continued where the kernel is unavailable: a warning, and both states on record.
    (run / "summary.json").unlink()
    monkeypatch.setattr(norm_kernel, "_checked", lambda: "no C++ compiler (c++) on PATH")
    with caplog.at_level("WARNING"):
        resumed = fit(config, run, progress=False)
    assert resumed["execution"]["norm_kernel"] == norm_kernel.FUSED
    assert resumed["execution"]["norm_kernel_now"] == "aten (no C++ compiler (c++) on PATH)"
    assert "round differently" in caplog.text


def test_a_kernel_that_disagrees_with_aten_is_not_used(kernel, monkeypatch):
    """The once-per-process check compares outputs and gradients, so a miscompiled build falls back."""
    built, _ = norm_kernel._load()

    class OffByOnePercent:
        forward = staticmethod(built.forward)

        @staticmethod
        def backward(*args):
            grad_x, grad_w, grad_b = built.backward(*args)
            return grad_x * 1.01, grad_w, grad_b

    monkeypatch.setattr(norm_kernel, "_load", lambda: (OffByOnePercent, None))
    norm_kernel._checked.cache_clear()
    try:
        assert norm_kernel.status().startswith("aten (disagrees with ATen (gradient")
        x = torch.randn(2, 20, 4, 4).contiguous(memory_format=torch.channels_last)
        assert not norm_kernel.applies(nn.BatchNorm2d(20), x)
    finally:
        norm_kernel._checked.cache_clear()


@pytest.mark.parametrize("no_autograd", [torch.no_grad, torch.inference_mode], ids=["no_grad", "inference_mode"])
def test_the_first_use_may_come_without_autograd(kernel, no_autograd):
    """BatchNorm re-estimation runs a training-mode model under no_grad; when that is the process's first
    use, the float64 check still runs (it once raised "element 0 of tensors does not require grad")."""
    torch.manual_seed(0)
    model = accelerate(build_model("micronet_v2", num_classes=10, dropout=0.0)).train().to(memory_format=torch.channels_last)
    aten = copy.deepcopy(model)
    x = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    norm_kernel._checked.cache_clear()
    try:
        with no_autograd():
            assert norm_kernel.available()
            out = model(x)
    finally:
        norm_kernel._checked.cache_clear()
    with torch.no_grad(), norm_kernel.aten_only():
        ref = aten(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    for (name, buf), (_, want) in zip(model.named_buffers(), aten.named_buffers()):
        torch.testing.assert_close(buf.float(), want.float(), rtol=1e-4, atol=1e-5, msg=name)


def test_a_lock_left_by_a_killed_build_is_removed_a_fresh_one_kept(tmp_path):
    """torch < 2.14's extension builder waits for ever while its lock file exists; a killed build leaves one."""
    lock = tmp_path / "lock"
    lock.touch()
    norm_kernel._clear_stale_lock(tmp_path)
    assert lock.exists()  # another process may be building right now
    old = time.time() - norm_kernel.STALE_LOCK_SECONDS - 1
    os.utime(lock, (old, old))
    norm_kernel._clear_stale_lock(tmp_path)
    assert not lock.exists()
    norm_kernel._clear_stale_lock(tmp_path)  # and no lock at all is fine


def test_no_compiler_means_aten_and_says_which_compiler(monkeypatch):
    monkeypatch.setenv("CXX", "no-such-c++-compiler")  # the compiler torch's builder would call
    norm_kernel._load.cache_clear()
    norm_kernel._checked.cache_clear()
    try:
        assert norm_kernel.status() == "aten (no C++ compiler (no-such-c++-compiler) on PATH)"
    finally:
        monkeypatch.delenv("CXX")
        norm_kernel._load.cache_clear()
        norm_kernel._checked.cache_clear()


@pytest.mark.parametrize("bf16_autocast", [False, True])
def test_training_forward_traces_without_graph_breaks(bf16_autocast):
    """torch.compile sees whole blocks: the kernel's eligibility check is skipped while compiling.

    On torch 2.11 (the GPU machine's) dynamo could not trace the check's ContextVar read: 47 graph
    breaks, a recompile per block shape up to dynamo's limit, and a compiled CUDA step slower than eager.
    Under CPU autocast the strided depthwise convs run their own autograd Function (``blocks``): traced too.
    """
    model = accelerate(build_model("micronet_v2", num_classes=100)).train().to(memory_format=torch.channels_last)
    x = torch.randn(8, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    torch._dynamo.reset()
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16_autocast):
            explained = torch._dynamo.explain(model)(x)
    finally:
        torch._dynamo.reset()
    assert explained.graph_break_count == 0, explained.break_reasons[:3]
    assert explained.graph_count == 1


def test_the_lock_of_torch_2_14_and_later_is_never_removed(monkeypatch, tmp_path):
    """From torch 2.14 the build lock is an OS lock on a file that stays: an old file may be held now."""
    from torch.utils import cpp_extension

    removed = []
    monkeypatch.setattr(norm_kernel, "_clear_stale_lock", lambda build_dir: removed.append(build_dir))
    norm_kernel._load.cache_clear()
    norm_kernel._checked.cache_clear()
    try:
        norm_kernel._load()
    finally:
        norm_kernel._load.cache_clear()
        norm_kernel._checked.cache_clear()
    assert bool(removed) == hasattr(cpp_extension, "FileBaton")
