"""evaluate / recalibrate_bn (docs/method.md §5.1 test protocol) and the ``micronet eval`` / ``bench eval`` CLIs."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from micronet_lib.data import Dataset, Split, normalize
from micronet_lib.evaluate import evaluate, recalibrate_bn
from micronet_lib.models import build_model

C = 10
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
LOSS_ATOL = 1e-5  # fp32 sums of a few dozen cross-entropies
BF16_LOSS_RTOL = 2e-2  # bf16 autocast keeps ~3 significant digits
PIXEL_STEP = 20  # label l is written as pixel value 20·l in the oracle datasets


def _oracle_split(n_per_class: int, seed: int) -> Split:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(C).repeat(n_per_class)[torch.randperm(C * n_per_class, generator=g)]
    images = torch.randint(0, 256, (len(labels), 3, 32, 32), dtype=torch.uint8, generator=g)
    images[:, 0, 0, 0] = (labels * PIXEL_STEP).to(torch.uint8)
    return Split(images, labels)


@pytest.fixture(scope="module")
def oracle_data() -> Dataset:
    return Dataset("oracle", "label written in pixel (0, 0, 0)", tuple(f"c{i}" for i in range(C)), MEAN, STD,
                   _oracle_split(4, 0), _oracle_split(3, 1))


class LabelReader(nn.Module):
    """Reads the label from pixel (0, 0, 0) and ranks class ``(label + shift) % C`` first, then label, ..."""

    def __init__(self, shift: int = 0, wrong_odd: bool = False):
        super().__init__()
        self.shift, self.wrong_odd = shift, wrong_odd
        self.scale = nn.Parameter(torch.ones(()))  # gives the module a device and a train flag worth restoring

    def forward(self, x):
        label = torch.round((x[:, 0, 0, 0] * STD[0] + MEAN[0]) * 255 / PIXEL_STEP).long()
        first = (label + self.shift) % C
        if self.wrong_odd:
            first = torch.where(label % 2 == 1, (label + 1) % C, label)
        logits = torch.zeros(x.shape[0], C, device=x.device)
        logits[torch.arange(x.shape[0]), label] = 2.0
        logits[torch.arange(x.shape[0]), first] = 3.0
        return logits * self.scale


def test_perfect_model_and_loss(oracle_data):
    model = LabelReader()
    result = evaluate(model, oracle_data, batch_size=7, progress=False)
    assert (result.top1, result.top5, result.n, result.correct) == (100.0, 100.0, 30, 30)
    np.testing.assert_array_equal(result.per_class, np.full(C, 100.0))
    x = normalize(oracle_data.test.images, MEAN, STD)
    want = F.cross_entropy(model(x), oracle_data.test.labels).item()
    assert result.loss == pytest.approx(want, abs=LOSS_ATOL)


def test_top5_and_per_class(oracle_data):
    second = evaluate(LabelReader(shift=1), oracle_data, progress=False)
    assert second.top1 == 0.0 and second.top5 == 100.0
    half = evaluate(LabelReader(wrong_odd=True), oracle_data, progress=False)
    assert half.top1 == 50.0
    np.testing.assert_array_equal(half.per_class, np.array([100.0, 0.0] * (C // 2)))


def test_batch_size_does_not_change_results(oracle_data):
    torch.manual_seed(0)
    model = build_model("micronet_v2", num_classes=C, width_mult=0.25, depth_mult=0.5)
    a = evaluate(model, oracle_data, batch_size=4, progress=False)
    b = evaluate(model, oracle_data, batch_size=64, progress=False)
    assert a.top1 == b.top1 and a.loss == pytest.approx(b.loss, abs=LOSS_ATOL)


def test_fast_modes_agree_and_state_is_restored(oracle_data):
    torch.manual_seed(0)
    model = build_model("micronet_v1", num_classes=C, width_mult=0.25, depth_mult=0.5).train()
    ref = evaluate(model, oracle_data, progress=False)
    assert model.training  # train flag restored
    cl = evaluate(model, oracle_data, channels_last=True, progress=False)
    assert cl.top1 == ref.top1 and cl.loss == pytest.approx(ref.loss, abs=LOSS_ATOL)
    assert model.conv1.weight.is_contiguous()  # memory format restored
    bf = evaluate(model, oracle_data, precision="bf16", progress=False)
    assert bf.precision == "bf16" and bf.loss == pytest.approx(ref.loss, rel=BF16_LOSS_RTOL)


def test_limit_is_a_fixed_mixed_subset(oracle_data):
    a = evaluate(LabelReader(wrong_odd=True), oracle_data, limit=12, progress=False)
    b = evaluate(LabelReader(wrong_odd=True), oracle_data, limit=12, progress=False)
    assert a.n == 12 and a.top1 == b.top1
    assert np.isfinite(a.per_class).sum() > 2  # several classes, not the first images only
    assert evaluate(LabelReader(), oracle_data, limit=10_000, progress=False).n == 30


@pytest.mark.parametrize(
    "kwargs, field",
    [(dict(precision="fp16"), "precision"), (dict(batch_size=0), "batch_size"), (dict(limit=0), "limit"),
     (dict(split="val"), "val")],
)
def test_bad_arguments(oracle_data, kwargs, field):
    with pytest.raises(ValueError, match=field):
        evaluate(LabelReader(), oracle_data, progress=False, **kwargs)


def test_class_count_mismatch_is_explained(oracle_data):
    with pytest.raises(ValueError, match="100.*10 classes.*num_classes=10"):
        evaluate(build_model("micronet_v2", width_mult=0.25, depth_mult=0.5), oracle_data, progress=False)


def test_recalibrate_bn_cumulative_average(oracle_data):
    torch.manual_seed(0)
    model = build_model("micronet_v2", num_classes=C, width_mult=0.25, depth_mult=0.5).train()
    bn = model.bn1
    bn.running_mean.fill_(7.0)
    recalibrate_bn(model, oracle_data, n_images=32, batch_size=8, seed=3)
    assert model.training and all(m.training for m in model.modules())
    assert bn.momentum == 0.01 and int(bn.num_batches_tracked) == 4
    idx = torch.randperm(len(oracle_data.train), generator=torch.Generator().manual_seed(3))[:32]
    with torch.no_grad():
        z = model.conv1(normalize(oracle_data.train.images[idx], MEAN, STD))
    # Equal batches: the cumulative average of batch means is the mean over all 32 images.
    torch.testing.assert_close(bn.running_mean, z.mean(dim=(0, 2, 3)), rtol=0, atol=1e-5)
    model.eval()
    recalibrate_bn(model, oracle_data, n_images=1000, batch_size=16)  # more than available: uses all 40
    assert not any(m.training for m in model.modules()) and int(bn.num_batches_tracked) == math.ceil(40 / 16)
    with pytest.raises(ValueError, match="n_images"):
        recalibrate_bn(model, oracle_data, n_images=0)


def test_evaluate_splits_builds_one_copy_and_equals_evaluate(oracle_data, monkeypatch):
    import dataclasses

    import micronet_lib.evaluate as ev

    data = dataclasses.replace(oracle_data, val=_oracle_split(2, 2))
    torch.manual_seed(0)
    model = build_model("micronet_v2", num_classes=C, width_mult=0.25, depth_mult=0.5).eval()
    copies = []
    real = ev.inference_copy
    monkeypatch.setattr(ev, "inference_copy", lambda *a, **k: copies.append(1) or real(*a, **k))
    both = ev.evaluate_splits(model, data, ("val", "test"), batch_size=8, progress=False)
    assert len(copies) == 1 and list(both) == ["val", "test"]
    for split in ("val", "test"):
        alone = evaluate(model, data, split, batch_size=8, progress=False)
        assert both[split].split == split and both[split].n == alone.n == len(data.split(split))
        assert (both[split].top1, both[split].top5, both[split].loss) == (alone.top1, alone.top5, alone.loss)
    assert len(copies) == 3
    with pytest.raises(TypeError, match=r"sequence of split names, e\.g\. \('test',\)"):
        ev.evaluate_splits(model, data, "test", progress=False)
    with pytest.raises(ValueError, match="no 'val' split"):  # before any copy is built
        ev.evaluate_splits(model, oracle_data, ("test", "val"), progress=False)
    assert len(copies) == 3


def test_recalibrate_bn_in_bf16_channels_last(oracle_data):
    """The statistics of a bf16 channels-last pass (fit's evaluation mode) are those of fp32 up to rounding."""
    torch.manual_seed(0)
    fp32 = build_model("micronet_v2", num_classes=C, width_mult=0.25, depth_mult=0.5).train()
    bf16 = copy.deepcopy(fp32).to(memory_format=torch.channels_last)
    recalibrate_bn(fp32, oracle_data, n_images=32, batch_size=8, seed=3)
    recalibrate_bn(bf16, oracle_data, n_images=32, batch_size=8, seed=3, precision="bf16", memory_format="channels_last")
    bns = [(a, b) for a, b in zip(fp32.modules(), bf16.modules()) if isinstance(a, nn.BatchNorm2d)]
    assert all(b.running_var.dtype == torch.float32 and int(b.num_batches_tracked) == 4 for _, b in bns)
    differs = False
    for a, b in bns:
        scale = a.running_var.sqrt() + 1e-3
        assert ((a.running_mean - b.running_mean).abs() / scale).max() < 0.1
        assert ((a.running_var - b.running_var).abs() / (a.running_var + 1e-3)).max() < 0.1
        differs |= not torch.equal(a.running_var, b.running_var)
    assert differs  # the pass really ran in bf16
    with pytest.raises(ValueError, match="precision='fp64'"):
        recalibrate_bn(fp32, oracle_data, n_images=8, precision="fp64")


def _write_tree(root, per_split: int = 2):
    from PIL import Image

    g = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in range(C):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(per_split):
                Image.fromarray(g.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d / f"{i}.png")


def test_cli_eval_untrained_ver2_on_an_image_folder(tmp_path, monkeypatch, capsys):
    from micronet_lib.cli import main

    monkeypatch.setenv("MICRONET_CACHE", str(tmp_path / "cache"))
    _write_tree(tmp_path / "tree")
    argv = ["eval", "--model", "micronet_v2", "--num-classes", "10", "--data", f"imagefolder:{tmp_path / 'tree'}",
            "--device", "cpu", "--no-progress", "--batch-size", "8"]
    assert main(argv + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 20 and len(out["per_class"]) == 10 and 0 <= out["top1"] <= 100 and out["top1"] <= out["top5"]
    assert main(argv) == 0
    assert "top-1 %" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.realdata
def test_cli_eval_on_real_cifar10_jpeg(cifar10_jpeg, capsys):
    from micronet_lib.cli import main

    argv = ["eval", "--model", "micronet_v2", "--num-classes", "10", "--data", f"imagefolder:{cifar10_jpeg}",
            "--limit", "64", "--device", "cpu", "--no-progress", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 64 and out["classes"][0] == "airplane" and out["description"].startswith("CIFAR-10")


def test_cli_bench_eval_tiny(capsys, tmp_path, monkeypatch):
    from micronet_lib.cli import main

    monkeypatch.setenv("MICRONET_CACHE", str(tmp_path))
    argv = ["bench", "eval", "--batch-size", "2", "--steps", "1", "--rounds", "1", "--warmup", "0", "--weights", "none",
            "--threads", "1", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"authors", "fp32", "fp32+channels_last"} <= set(out["images_per_s"]) and out["chosen"] in out["images_per_s"]
    assert all(v > 0 for v in out["images_per_s"].values())
    # every timed mode of this project says how its copy was prepared: BN folded, pairs fused on CPU
    assert set(out["prepared"]) == set(out["images_per_s"]) - {"authors"}
    assert all(p["bn_folded"] and p["activations_fused"] > 0 for p in out["prepared"].values())
    assert main(["bench", "eval", "--rounds", "0"]) == 2
    assert "--rounds 0" in capsys.readouterr().err


def test_masked_model_evaluates_and_trains_afterwards(oracle_data):
    """The mask pre-hook writes weights inside inference_mode; training must still work afterwards."""
    from micronet_lib.models.masks import attach_mask

    torch.manual_seed(0)
    model = build_model("micronet_v2", num_classes=C, width_mult=0.25, depth_mult=0.5)
    attach_mask(model.layers[1].conv1, (torch.rand_like(model.layers[1].conv1.weight) > 0.5).float())
    evaluate(model, oracle_data, limit=8, progress=False)
    model.train()
    model(torch.randn(2, 3, 16, 16)).sum().backward()
    assert model.layers[1].conv1.weight.grad is not None
    assert torch.count_nonzero(model.layers[1].conv1.weight[model.layers[1].conv1.mask == 0]) == 0
