"""Masks survive optimiser steps, save/load, device/dtype moves and torch.compile (issue #7; docs/method.md §8.1)."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn as nn

from micronet_lib.models import build_model
from micronet_lib.pruning import (
    apply_masks,
    check_masks,
    keep_masked,
    load_masked_state_dict,
    mask_state,
    masked_modules,
    prune_to_rate,
    read_state_dict,
    save_pruned,
)

pytestmark = pytest.mark.usefixtures("one_thread")


STEPS = 20  # the issue: "after 20 optimiser steps ... every masked weight is still exactly zero"
RATE = 60.0


def _tiny_micronet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("micronet_v2", num_classes=10, width_mult=0.5, depth_mult=0.5)


def _synthetic_batch(seed: int, n: int = 8, classes: int = 10, size: int = 16):
    # 16×16 inputs: the network is resolution-agnostic (global pooling) and 4× cheaper than 32×32.
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, classes, (n,), generator=g)


def _masked_weights_nonzero(model: nn.Module) -> int:
    return sum(int((m.weight[m.mask == 0] != 0).sum()) for _, m in masked_modules(model))


def _sgd_steps(model: nn.Module, *, hook: bool, steps: int = STEPS) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)
    if hook:
        keep_masked(opt, model)
    model.train()
    for i in range(steps):
        x, y = _synthetic_batch(i)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if hook:
            assert _masked_weights_nonzero(model) == 0, f"step {i}"


def test_masked_weights_stay_exactly_zero_after_sgd_steps():
    model = _tiny_micronet()
    prune_to_rate(model, RATE)
    kept_before = {k: int(v.sum()) for k, v in mask_state(model).items()}
    _sgd_steps(model, hook=True)
    assert _masked_weights_nonzero(model) == 0
    assert {k: int(v.sum()) for k, v in mask_state(model).items()} == kept_before
    check_masks(model.state_dict(), check="pruned")


def test_without_the_step_hook_momentum_revives_pruned_weights_until_the_next_forward():
    # Why keep_masked exists: weight decay and momentum move pruned entries after each step.
    model = _tiny_micronet()
    prune_to_rate(model, RATE)
    _sgd_steps(model, hook=False, steps=2)
    assert _masked_weights_nonzero(model) > 0
    apply_masks(model)
    assert _masked_weights_nonzero(model) == 0


def test_save_load_round_trip_preserves_masks_zeros_and_logits(tmp_path):
    model = _tiny_micronet().eval()
    prune_to_rate(model, RATE)
    x, _ = _synthetic_batch(99)
    path = save_pruned(model, tmp_path / "pruned.t7", meta={"rate_percent": RATE})
    assert (tmp_path / "pruned.t7.json").is_file()
    state = read_state_dict(path)
    # Authors' layout: each mask right after its weight (after the bias when there is one), docs/method.md §4.3.
    keys = list(state)
    assert keys[keys.index("conv1.weight") + 1] == "conv1.mask"
    assert keys[keys.index("linear.bias") + 1] == "linear.mask"
    fresh = _tiny_micronet(seed=1).eval()
    load_masked_state_dict(fresh, state)
    assert mask_state(fresh).keys() == mask_state(model).keys()
    for key, mask in mask_state(model).items():
        assert torch.equal(mask_state(fresh)[key], mask)
    assert _masked_weights_nonzero(fresh) == 0
    assert torch.equal(fresh(x), model(x))
    # A plain (unmasked) model refuses the masked checkpoint under strict loading (no strict=False).
    with pytest.raises(RuntimeError, match="mask"):
        _tiny_micronet().load_state_dict(state, strict=True)


def test_checkpoint_whose_masks_disagree_with_its_zeros_is_rejected(tmp_path):
    model = _tiny_micronet()
    prune_to_rate(model, RATE)
    state = OrderedDict((k, v.clone()) for k, v in model.state_dict().items())
    pruned = state["layers.0.conv1.mask"] == 0
    state["layers.0.conv1.weight"][pruned] = 0.5  # a weight under a 0 mask that is not zero
    torch.save(state, tmp_path / "bad.t7")
    with pytest.raises(ValueError, match=r"layers\.0\.conv1\.mask: \d+ nonzero weights under mask 0"):
        load_masked_state_dict(_tiny_micronet(), read_state_dict(tmp_path / "bad.t7"))
    state = OrderedDict((k, v.clone()) for k, v in model.state_dict().items())
    where = (state["linear.mask"] == 0).nonzero()[0].tolist()
    state["linear.mask"][tuple(where)] = 1.0  # one zero weight under a 1 mask: strict fails, "pruned" accepts
    with pytest.raises(ValueError, match=r"linear\.mask: 0 nonzero weights under mask 0, 1 zero weights under mask 1"):
        check_masks(state)
    check_masks(state, check="pruned")
    state["linear.mask"] = state["linear.mask"] * 0.5
    with pytest.raises(ValueError, match="other than 0 and 1"):
        check_masks(state)


def test_masks_follow_dtype_and_device_moves():
    model = _tiny_micronet()
    prune_to_rate(model, RATE)
    targets = [torch.float64] + (["cuda"] if torch.cuda.is_available() else [])
    for target in targets:
        moved = model.to(target)
        for _, m in masked_modules(moved):
            assert m.mask.device == m.weight.device and m.mask.dtype == m.weight.dtype
        with torch.no_grad():
            for _, m in masked_modules(moved):
                m.weight.add_(1.0)  # dirty every entry; the forward pre-hook must re-zero the pruned ones
        x, _ = _synthetic_batch(3)
        moved(x.to(next(moved.parameters())))
        assert _masked_weights_nonzero(moved) == 0


def test_torch_compile_keeps_zeros_and_matches_eager():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 4))
    prune_to_rate(model, 50)
    model.eval()
    x = torch.randn(2, 3, 8, 8)
    expected = model(x)
    with torch.no_grad():
        for _, m in masked_modules(model):
            m.weight.add_(1.0)  # the compiled forward must run the masking hook, not a stale graph
    # aot_eager runs dynamo + functionalisation (where in-place parameter writes would break) without a C++ build.
    compiled = torch.compile(model, backend="aot_eager")
    got = compiled(x)
    assert _masked_weights_nonzero(model) == 0
    with torch.no_grad():
        for _, m in masked_modules(model):
            m.weight.sub_(1.0 * m.mask)  # undo the dirtying on the kept weights
    assert torch.allclose(compiled(x), expected, atol=1e-6)
    assert got.shape == expected.shape
    # Pruning through the compiled wrapper addresses the original modules (no "_orig_mod." names).
    assert set(prune_to_rate(compiled, 60)) == {"0.mask", "4.mask"}


@pytest.mark.slow
def test_inductor_compiled_training_keeps_zeros():
    # The real backend (C++ codegen, ~30 s to compile on one core): dynamo traces the masking
    # pre-hook into the graph (1 graph, 0 breaks), so compiled forwards and steps keep the zeros.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 4))
    prune_to_rate(model, 50)
    explained = torch._dynamo.explain(model)(torch.randn(2, 3, 8, 8))
    assert (explained.graph_count, explained.graph_break_count) == (1, 0)
    model.eval()
    x = torch.randn(2, 3, 8, 8)
    expected = model(x)
    compiled = torch.compile(model)
    assert torch.allclose(compiled(x), expected, atol=1e-5)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    keep_masked(opt, model)
    for i in range(3):
        opt.zero_grad()
        compiled(_synthetic_batch(i, n=4, size=8)[0]).sum().backward()
        opt.step()
        assert _masked_weights_nonzero(model) == 0
