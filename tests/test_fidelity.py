"""Fidelity: ``fit``'s training step and pruning transition against the recipe's formulas (issue #16).

The reference below is written from docs/method.md alone, not from the engine's helpers: SGD with Nesterov
momentum and weight decay on every parameter (§5.3), the step-at-epoch-start cosine (§5.4), the
per-iteration objective λ·ℓ(z, y_a) + (1 − λ)·ℓ(z, y_b) + 0.7·R_ortho (§5.5), the one-step SRIP
estimate (§6.1), weighted label smoothing with S from the classifier once per epoch (§6.2), CutMix with
the box and λ correction of §6.4, and global magnitude pruning with the masks of §8.2/§8.4 (masks from
the last-epoch weights, then the previous cycle's test-selected best weights under the new masks).

Both sides run the same tiny MicroNet in float64 from the same initial weights with the same random
streams: the data order and CutMix draws come from the engine's per-epoch generator, dropout and the
orthogonality start vectors from torch's global RNG seeded per epoch (the engine's reproducibility
protocol, ``seed_for(seed, cycle, epoch, 1 | 2)``). The network's forward pass is the shared model; all
else is independent. Parameters, BN statistics and masks must agree to float64 round-off.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from micronet_lib.train import TrainConfig, fit
from micronet_lib.train import engine
from micronet_lib.train.setup import seed_for

PARAM_TOL = 1e-12  # measured: <= 4.5e-16 (float64 round-off); a recipe deviation moves parameters by >= 1e-6
BASE = dict(
    dataset="synthetic", train_per_class=2, val_per_class=None, test_per_class=3, select_on="test",
    bn_recalibrate_images=0, batch_size=8, cycles=1, epochs_per_cycle=2, augment="test",
    width_mult=0.25, depth_mult=0.5,
    precision="fp32", memory_format="contiguous",  # float64 runs: no autocast, the reference layout
)


# ------------------------------------------------------------------------------- the engine, in float64
def _run_engine(config: TrainConfig, tmp_path, monkeypatch):
    """fit(config) with the model in float64; returns (initial model copy, trained model, pruning calls)."""
    built, calls = {}, []
    real_build = engine.build_training_model

    def build_float64(cfg, num_classes):
        model = real_build(cfg, num_classes).double()
        model.register_forward_pre_hook(lambda _m, args: (args[0].to(torch.float64),))
        built["initial"] = copy.deepcopy(model)
        built["model"] = model
        return model

    import micronet_lib.pruning as pruning

    real_prune = pruning.prune_to_rate

    def spy_prune(model, rate, **kwargs):
        calls.append(dict(rate=rate, **kwargs))
        return real_prune(model, rate, **kwargs)

    monkeypatch.setattr(engine, "build_training_model", build_float64)
    monkeypatch.setattr(pruning, "prune_to_rate", spy_prune)
    summary = fit(config, tmp_path / "run", progress=False)
    assert summary["status"] == "finished"
    return built["initial"], built["model"], calls, summary


# ------------------------------------------------------------------------------- the reference (docs/method.md)
def _lr(config, epoch):  # §5.4: η_e = η_min + ½(η_0 − η_min)(1 + cos(π(e + 1)/T))
    return config.lr_min + 0.5 * (config.lr - config.lr_min) * (1 + math.cos(math.pi * (epoch + 1) / config.epochs_per_cycle))


def _similarity(w):  # §6.2: S_ij = exp|cos(w_i, w_j)| / Σ_{k≠i} exp|cos(w_i, w_k)|, S_ii = 0
    unit = w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)
    e = torch.exp((unit @ unit.t()).abs())
    e.fill_diagonal_(0)
    return e / e.sum(1, keepdim=True)


def _label_loss(z, y, eps, s):  # §6.2 (ε = 0: cross-entropy): q_y = 1 − ε, q_k = ε·S_yk, mean of −Σ q log p
    q = eps * s[y]
    q[torch.arange(len(y)), y] = 1 - eps
    return -(q * F.log_softmax(z, 1)).sum(1).mean()


def _cutmix(x, y, g):  # §6.4, with the draw order of the engine's generator (coin, λ, π, centre rows then columns)
    rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=g)))
    assert rng.random() < 1.0  # mix_prob = 1: the coin is drawn and always passes
    lam = rng.beta(1.0, 1.0)
    perm = torch.from_numpy(rng.permutation(len(x)))
    side = x.shape[-1]
    cut = int(side * math.sqrt(1 - lam))
    cr, cc = int(rng.integers(side)), int(rng.integers(side))
    r0, r1 = min(max(cr - cut // 2, 0), side), min(max(cr + cut // 2, 0), side)
    c0, c1 = min(max(cc - cut // 2, 0), side), min(max(cc + cut // 2, 0), side)
    x = x.clone()
    x[:, :, r0:r1, c0:c1] = x[perm, :, r0:r1, c0:c1]
    return x, y, y[perm], 1 - (r1 - r0) * (c1 - c0) / side**2


def _ortho(model, masks):  # §6.1: mean over the 1×1 convs of (uᵀAv)², one power step, fresh u ~ N(0, I)
    terms = []
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1):
            w = m.weight * masks[name] if name in masks else m.weight
            w = w.reshape(w.shape[0], -1)
            a = w.t() @ w - torch.eye(w.shape[1], dtype=w.dtype)
            u = torch.randn(w.shape[1], dtype=w.dtype)
            u = u / u.norm().clamp_min(1e-12)
            v = a.t() @ u
            v = v / v.norm().clamp_min(1e-12)
            u = a @ v
            u = u / u.norm().clamp_min(1e-12)
            terms.append((u @ (a @ v)) ** 2)
    return torch.stack(terms).mean()


def _global_masks(model, rate):  # §8.2: pool |w| of every ndim > 1 weight, t = percentile p, keep |w| > t
    weights = {n[: -len(".weight")]: p for n, p in model.named_parameters() if n.endswith("weight") and p.ndim > 1}
    pool = torch.cat([w.detach().abs().flatten() for w in weights.values()]).numpy()
    t = np.percentile(pool, rate)
    return {name: (w.detach().abs() > t).to(w.dtype) for name, w in weights.items()}


def _apply(model, masks):
    with torch.no_grad():
        for name, mask in masks.items():
            model.get_submodule(name).weight.mul_(mask)


def _test_top1(model, ds):
    model.eval()
    with torch.no_grad():
        x = (ds.test.images.double() / 255 - torch.tensor(ds.mean, dtype=torch.float64)[:, None, None]) / torch.tensor(
            ds.std, dtype=torch.float64)[:, None, None]
        top1 = (model(x).argmax(1) == ds.test.labels).double().mean().item()
    model.train()
    return top1


def _reference(config: TrainConfig, model, ds, eps: float):
    """Train ``model`` (float64) as the recipe says; returns the model, its masks and the selected epochs."""
    images, labels = ds.train.images, ds.train.labels
    mean = torch.tensor(ds.mean)[:, None, None]
    std = torch.tensor(ds.std)[:, None, None]
    params = [p for p in model.parameters()]
    masks, best, selected = {}, None, []
    for cycle in range(config.cycles):
        if config.prune_rates is not None:
            new_masks = _global_masks(model, config.prune_rates[cycle])  # from the last-epoch weights
            if cycle > 0:
                model.load_state_dict(best[1])  # the previous cycle's best weights ...
            masks = new_masks
            _apply(model, masks)  # ... under the new masks
        best = None
        momentum = [None] * len(params)  # a fresh optimiser per cycle
        for epoch in range(config.epochs_per_cycle):
            g = torch.Generator().manual_seed(seed_for(config.seed, cycle, epoch, 1))
            torch.manual_seed(seed_for(config.seed, cycle, epoch, 2))
            lr = _lr(config, epoch)
            w_fc = model.linear.weight.detach() * masks.get("linear", 1.0)
            s = _similarity(w_fc)  # used by weighted LS only (ε = 0 for cross-entropy)
            model.train()
            for flat in torch.randperm(len(images), generator=g).split(config.batch_size):
                x = images[flat].float().div(255.0).sub(mean).div(std)  # ToTensor + Normalize (§5.1)
                x, y_a, y_b, lam = _cutmix(x, labels[flat], g)
                z = model(x.double())
                loss = lam * _label_loss(z, y_a, eps, s) + (1 - lam) * _label_loss(z, y_b, eps, s)
                loss = loss + config.ortho_coef * _ortho(model, masks)
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                with torch.no_grad():  # §5.3: SGD, Nesterov, weight decay on everything
                    for i, (p, d) in enumerate(zip(params, grads)):
                        if d is None:  # outside the graph (the dead stride-2 SE's biases): SGD skips it
                            continue
                        d = d + config.weight_decay * p
                        momentum[i] = d.clone() if momentum[i] is None else config.momentum * momentum[i] + d
                        p -= lr * (d + config.momentum * momentum[i])
                _apply(model, masks)  # pruned weights re-zeroed after every step (§8.1)
            score = _test_top1(model, ds)
            if best is None or score > best[0]:
                best = (score, copy.deepcopy(model.state_dict()), epoch)
        selected.append(best[2] + 1)
    return model, masks, selected


def _assert_same(engine_model, ref_model):
    ref = dict(ref_model.state_dict())
    for key, value in engine_model.state_dict().items():
        if key.endswith(".mask"):
            continue
        other = ref[key]
        if value.is_floating_point():
            diff = (value - other).abs().max().item()
            assert diff <= PARAM_TOL, f"{key}: max |engine − reference| = {diff:.3g}"
        else:
            assert torch.equal(value, other), key


# ------------------------------------------------------------------------------- tests
def _dataset(config):
    from micronet_lib.train.setup import prepare_data

    return prepare_data(config)


@pytest.mark.parametrize("loss, eps", [("ce", 0.0), ("wls", 0.3)])
def test_dense_training_steps_follow_the_recipe(loss, eps, tmp_path, monkeypatch):
    config = TrainConfig.from_profile("smoke", **BASE, loss=loss)
    assert config.loss_epsilon == eps  # pretraining: the authors' ε (0.3 for weighted LS, §6.2)
    initial, trained, calls, summary = _run_engine(config, tmp_path, monkeypatch)
    assert calls == [] and summary["loss_epsilon"] == eps
    reference, _, _ = _reference(config, copy.deepcopy(initial), _dataset(config), eps)
    _assert_same(trained, reference)
    moved = max((a - b).abs().max().item() for a, b in zip(trained.parameters(), initial.parameters()))
    assert moved > 1e-4  # the comparison is not vacuous: training did move the parameters


@pytest.mark.parametrize("ties", ["exact", "threshold"])
def test_pruning_transition_follows_the_recipe(ties, tmp_path, monkeypatch):
    # Two pruning cycles with weighted LS: ε = 0.1 in the pruning stage (§6.2, §8.4), masks at 5 % from
    # the initial weights, then at 10 % from the last-epoch weights with the best epoch's weights reloaded.
    config = TrainConfig.from_profile("smoke", **{**BASE, "cycles": 2}, loss="wls", prune_rates=(5.0, 10.0), prune_ties=ties)
    assert config.loss_epsilon == 0.1
    initial, trained, calls, summary = _run_engine(config, tmp_path, monkeypatch)
    assert [c["ties"] for c in calls] == [ties, ties] and [c["rate"] for c in calls] == [5.0, 10.0]
    reference, masks, selected = _reference(config, copy.deepcopy(initial), _dataset(config), 0.1)
    assert [c["epoch"] for c in summary["cycle_best"]] == selected, selected
    assert selected[0] == 1  # cycle 1 keeps its first epoch, so the reload at cycle 2 is not a no-op
    for name, mask in masks.items():
        assert torch.equal(trained.get_submodule(name).mask, mask), f"{name}: masks differ"
    assert 0 < sum(float((1 - m).sum()) for m in masks.values()) < sum(m.numel() for m in masks.values())
    _assert_same(trained, reference)
