"""The static-buffer training step (issue #33, micronet_lib/train/step.py) against the eager step, on a CPU.

On a CPU ``capture_step`` runs the static function eagerly, so it must give the eager step's parameters,
BatchNorm statistics and optimiser state bit for bit: same seed, batches, masks, the paper recipe's loss
(CutMix, weighted LS, 0.7·orthogonality, Nesterov SGD with weight decay). tests/test_cuda.py checks the
captured form on a GPU.
"""

from __future__ import annotations

import copy

import pytest
import torch

from micronet_lib.accel.execution import ExecutionMode
from micronet_lib.train import TrainConfig, fit, lr_at, read_metrics
from micronet_lib.train.step import StaticStep, TrainStep

# the paper recipe's step on a small, fast model: CutMix, weighted LS, ortho 0.7, pruning masks over two cycles
# (the second reloads the best weights under new masks, with a fresh optimiser and a new static step);
# 120 training images at batch 32 leave a 24-image batch at every epoch's end (the eager fallback)
RECIPE = dict(loss="wls", mix="cutmix", ortho_coef=0.7, train_per_class=12, val_per_class=2, test_per_class=4,
              batch_size=32, prune_rates=(0.0, 40.0), prune_scope="layer", bn_recalibrate_images=32,
              precision="fp32", memory_format="contiguous", cycles=2, epochs_per_cycle=1)


def _state(run_dir):
    return torch.load(run_dir / "last.pt", map_location="cpu", weights_only=False)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    eager = TrainConfig.from_profile("smoke", **RECIPE)
    static = eager.replace(capture_step="graph")
    fit(eager, root / "eager", progress=False)
    fit(static, root / "static", progress=False)
    return eager, static, root


def test_static_step_in_fit_equals_the_eager_step(two_runs):
    _, _, root = two_runs
    a, b = _state(root / "eager"), _state(root / "static")
    assert a["step"] == b["step"] > 0
    keys = a["model"].keys()
    assert keys == b["model"].keys() and any(k.endswith(".mask") for k in keys)
    assert any(k.endswith("running_var") for k in keys)
    for k in keys:  # parameters, BatchNorm statistics and masks
        assert torch.equal(a["model"][k], b["model"][k]), k
    bufs_a = [s["momentum_buffer"] for s in a["optimizer"]["state"].values()]
    bufs_b = [s["momentum_buffer"] for s in b["optimizer"]["state"].values()]
    assert len(bufs_a) == len(bufs_b) > 0 and all(torch.equal(x, y) for x, y in zip(bufs_a, bufs_b))
    for ra, rb in zip(read_metrics(root / "eager"), read_metrics(root / "static"), strict=True):
        assert (ra["loss"], ra["loss_ortho"], ra["train_top1"], ra["test_top1"]) == \
               (rb["loss"], rb["loss_ortho"], rb["train_top1"], rb["test_top1"])


def test_the_fitted_optimizer_holds_the_lr_tensor_of_the_last_epoch(two_runs):
    _, static, root = two_runs
    groups = _state(root / "static")["optimizer"]["param_groups"]
    last = lr_at(static, static.epochs_per_cycle - 1)  # a float64 tensor on a CPU: the schedule's value exactly
    assert all(torch.is_tensor(g["lr"]) and g["lr"].dtype == torch.float64 and float(g["lr"]) == last for g in groups)


def _pieces(seed: int = 0):
    from micronet_lib.models import build_model
    from micronet_lib.pruning import prune_to_rate
    from micronet_lib.regularizers import make_loss

    torch.manual_seed(seed)
    model = build_model("micronet_v2", num_classes=10, width_mult=0.25, depth_mult=0.5, dropout=0.3, bn_momentum=0.01)
    prune_to_rate(model, 30.0, scope="layer")
    loss_fn = make_loss("wls", num_classes=10, epsilon=0.3)
    loss_fn.update_similarity(model)
    return model, loss_fn


def _step(model, loss_fn):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-5)
    return TrainStep(model, model, loss_fn, optimizer, ortho_coef=0.7, ortho_layers="all_1x1", mode=ExecutionMode(),
                     device=torch.device("cpu"))


def test_static_step_equals_the_eager_step_after_n_steps_with_unmixed_and_short_batches():
    from micronet_lib.regularizers import cutmix

    model, loss_fn = _pieces()
    eager = _step(model, loss_fn)
    twin = copy.deepcopy(model)
    static = StaticStep(_step(twin, copy.deepcopy(loss_fn)), kind="graph", batch_size=8)
    gen = torch.Generator().manual_seed(3)
    for i in range(6):
        n = 8 if i != 4 else 5  # a short batch runs eagerly through the same function
        x = torch.randn(n, 3, 32, 32, generator=gen)
        y = torch.randint(0, 10, (n,), generator=gen)
        x, y_a, y_b, lam = cutmix(x, y, generator=gen) if i != 2 else (x, y, None, 1.0)  # batch 2 unmixed
        lr = 0.1 * (0.5 ** i)
        eager.set_lr(lr)
        static.set_lr(lr)
        torch.manual_seed(100 + i)  # dropout and the orthogonality start vectors
        out_a = eager(x, y_a, y_b, lam)
        torch.manual_seed(100 + i)
        out_b = static(x, y_a, y_b, lam)
        for t_a, t_b in zip(out_a, out_b):
            assert torch.equal(t_a, t_b), i
    for (name, a), b in zip(model.state_dict().items(), twin.state_dict().values()):
        assert torch.equal(a, b), name
    assert static.calls == 5  # the five full batches went through the static buffers


def test_the_lr_tensor_follows_the_schedule_exactly_and_is_shared_by_every_group():
    config = TrainConfig(epochs_per_cycle=150, decay_1d=False)  # two parameter groups
    from micronet_lib.train.setup import make_optimizer

    model, loss_fn = _pieces()
    optimizer = make_optimizer(config, model)
    assert len(optimizer.param_groups) == 2
    step = TrainStep(model, model, loss_fn, optimizer, ortho_coef=0.7, ortho_layers="all_1x1", mode=ExecutionMode(),
                     device=torch.device("cpu"))
    static = StaticStep(step, kind="compile", batch_size=8)
    for epoch in range(config.epochs_per_cycle):
        static.set_lr(lr_at(config, epoch))
        assert all(g["lr"] is static.lr for g in optimizer.param_groups)
        assert static.lr.item() == lr_at(config, epoch)  # float64: the schedule's value, not a rounding of it


def test_capture_step_is_checked_and_leaves_earlier_hashes_alone():
    base = TrainConfig()
    assert "capture_step" not in base.to_dict()  # the default is left out: every earlier run keeps its hash
    graph = base.replace(capture_step="graph")
    assert graph.to_dict()["capture_step"] == "graph" and graph.config_hash() != base.config_hash()
    assert TrainConfig.from_dict(graph.to_dict()) == graph
    with pytest.raises(ValueError, match="capture_step"):
        TrainConfig(capture_step="cudagraph")
    with pytest.raises(ValueError, match="fp16"):
        TrainConfig(capture_step="graph", precision="fp16")
