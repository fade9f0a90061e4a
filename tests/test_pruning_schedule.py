"""A 2-cycle pruning schedule through the training engine on synthetic data (docs/method.md §8.3–8.4; issue #7)."""

from __future__ import annotations

import json

import pytest
import torch

import micronet_lib.pruning as pruning
from micronet_lib.cli import main
from micronet_lib.models import build_model
from micronet_lib.pruning import global_sparsity, linear_schedule, n_to_prune, read_state_dict

ONE_WEIGHT = 1
TINY = dict(num_classes=10, width_mult=0.5, depth_mult=0.5)  # "synthetic" has 10 classes
SETS = [
    "width_mult=0.5", "depth_mult=0.5", "train_per_class=4", "val_per_class=2", "test_per_class=2", "epochs_per_cycle=1",
    "batch_size=20", "bn_recalibrate_images=20", "eval_batch_size=20",
]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_two_cycle_schedule_ends_at_target_with_nested_masks(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MICRONET_RUNS", str(tmp_path / "runs"))
    torch.manual_seed(0)
    start = build_model("micronet_v2", **TINY)
    init = tmp_path / "init.t7"
    torch.save(start.state_dict(), init)

    seen = []  # masks computed at the start of each cycle, in order
    real = pruning.prune_to_rate

    def recording(model, rate, **kwargs):
        masks = real(model, rate, **kwargs)
        seen.append((rate, {k: v.detach().clone() for k, v in masks.items()}))
        return masks

    monkeypatch.setattr(pruning, "prune_to_rate", recording)
    argv = ["prune", "--from", str(init), "--max-rate", "30", "--cycles", "2", "--profile", "smoke", "--device", "cpu", "--json"]
    for s in SETS:
        argv += ["--set", s]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["status"] == "finished"
    assert summary["config"]["prune_rates"] == [15.0, 30.0] == linear_schedule(0, 30, 2)
    assert summary["config"]["init_from"] == str(init)

    assert [rate for rate, _ in seen] == [15.0, 30.0]
    (_, first), (_, second) = seen
    total = sum(m.numel() for m in second.values())
    assert sum(int((m == 0).sum()) for m in first.values()) == n_to_prune(total, 15)
    assert sum(int((m == 0).sum()) for m in second.values()) == n_to_prune(total, 30)
    assert all(bool((second[k] <= first[k]).all()) for k in first)  # nested: kept(30 %) ⊆ kept(15 %)

    (last,) = list((tmp_path / "runs").rglob("last.pt"))
    final = read_state_dict(last)
    assert abs(global_sparsity(final) - 0.30) <= ONE_WEIGHT / total
    for key, mask in second.items():
        assert torch.equal(final[key], mask), key
        assert int((final[key[: -len("mask")] + "weight"][mask == 0] != 0).sum()) == 0, key
