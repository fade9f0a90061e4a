"""The speed layer behind one seam (issue #30): ``accel.kernel_blocks.accelerate`` changes how a built
MicroNet runs, never its keys, names or function; ``MICRONET_ACCEL=0`` turns the whole layer off and the
companion still builds, scores, trains and evaluates (plain PyTorch layers, fp32 contiguous, no kernel).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from micronet_lib.accel import ACCEL_ENV, OFF_NOTE
from micronet_lib.accel.kernel_blocks import accelerate, is_accelerated, plain_layers
from micronet_lib.models import MicroBlock, MicroNet, build_model
from micronet_lib.scoring import count

REPO = Path(__file__).resolve().parents[1]


def test_accelerate_keeps_keys_names_and_function_and_is_undone_by_plain_layers():
    torch.manual_seed(0)
    plain = build_model("micronet_v2", num_classes=10, dropout=0.0).train()
    fast = accelerate(build_model("micronet_v2", num_classes=10, dropout=0.0)).train()
    fast.load_state_dict(plain.state_dict())
    assert is_accelerated(fast) and all(is_accelerated(b) for b in fast.layers)
    assert not any(is_accelerated(m) for m in plain.modules())  # built plain by default
    assert type(fast) is MicroNet and all(type(b) is MicroBlock for b in fast.layers)  # classes kept (the scorer reads them)
    assert list(fast.state_dict()) == list(plain.state_dict())
    assert [name for name, _ in fast.named_modules()] == [name for name, _ in plain.named_modules()]
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(fast(x), plain(x), rtol=0, atol=0)  # NCHW fp32: the kernel steps aside
    assert all(is_accelerated(b) for b in copy.deepcopy(fast).layers)  # a copy (evaluation's) keeps the path
    plain_layers(fast)
    assert not any(is_accelerated(m) for m in fast.modules())


def test_the_scorer_counts_an_accelerated_model_as_the_plain_one():
    assert count(accelerate(build_model("micronet_v2"))).summary == count(build_model("micronet_v2")).summary


_OFF_SCRIPT = r"""
import json, tempfile
import torch
from micronet_lib.accel import allocator, fusion, norm_kernel
from micronet_lib.accel.kernel_blocks import is_accelerated
from micronet_lib.models import build_model
from micronet_lib.scoring import count
from micronet_lib.train import TrainConfig, fit
from micronet_lib.train.setup import build_training_model

config = TrainConfig.from_profile("smoke", cycles=1, epochs_per_cycle=1, prune_rates=None, train_per_class=8,
                                  val_per_class=4, test_per_class=4, bn_recalibrate_images=0, precision="auto",
                                  memory_format="auto")  # "auto": what the accel layer would choose
model = build_training_model(config, 10)
with tempfile.TemporaryDirectory() as tmp:
    summary = fit(config, tmp, progress=False)
torch.manual_seed(0)
net = build_model("micronet_v2", num_classes=10).eval()
print(json.dumps({
    "plain": not any(is_accelerated(m) for m in model.modules()),
    "norm_kernel": norm_kernel.status(), "fusion": fusion.fusion_available(), "allocator": allocator.configure(),
    "execution": summary["execution"], "score": count(build_model("micronet_v2")).summary,
    "logits": net(torch.ones(2, 3, 32, 32)).tolist(),
}))
"""


def test_with_the_accel_layer_off_the_model_scorer_and_a_smoke_training_run(tmp_path):
    env = {**os.environ, ACCEL_ENV: "0", "MICRONET_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", _OFF_SCRIPT], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["plain"]  # the training model kept the paper's plain blocks
    assert out["norm_kernel"] == f"aten ({OFF_NOTE})" and out["fusion"] is False
    assert out["allocator"]["applied"] is False and out["allocator"]["note"] == OFF_NOTE
    for kind in ("train", "eval"):
        assert out["execution"][kind]["source"] == OFF_NOTE, out["execution"]
        assert out["execution"][kind]["mode"]["precision"] == "fp32"
        assert out["execution"][kind]["mode"]["memory_format"] == "contiguous"
    assert out["execution"]["norm_kernel"] == "aten (NCHW training)"
    assert out["score"] == json.loads(json.dumps(count(build_model("micronet_v2")).summary))  # the scorer: same count as here
    torch.manual_seed(0)
    here = build_model("micronet_v2", num_classes=10).eval()(torch.ones(2, 3, 32, 32))
    torch.testing.assert_close(torch.tensor(out["logits"]), here, rtol=1e-5, atol=1e-6)  # the model: same function
