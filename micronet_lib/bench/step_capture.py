"""``micronet bench train --capture``: the paper-recipe step eager vs captured (train/step.py, issue #33).

One runner per ``TrainConfig.capture_step`` kind, each on its own copy of the weights: forward, weighted
LS over a CutMix label pair (λ = 0.7), 0.7·orthogonality over the 68 1×1 convs, backward, Nesterov SGD
with weight decay, masks re-applied, in fp32 (the recipe's numerics) at batch 128 on fixed inputs. On CUDA
"graph" replays one CUDA graph per step and "compile" runs ``torch.compile(mode="reduce-overhead")``; on a
CPU both run the static-buffer function eagerly, so their figures there only show its overhead. The
capture (and a compile) happens while the runner is built, before any timed call.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
from micronet_lib.accel.execution import ExecutionMode
from micronet_lib.regularizers import make_loss
from micronet_lib.train.config import TrainConfig
from micronet_lib.train.step import CAPTURE_KINDS, WARMUP_STEPS, make_step

__all__ = ["capture_runners"]


def capture_runners(model: torch.nn.Module, *, batch_size: int, device: torch.device,
                    num_classes: int = 100) -> dict[str, Callable[[], None]]:
    """``{"step eager": ..., "step graph": ..., "step compile": ...}``, each call one synced training step."""
    config = TrainConfig(batch_size=batch_size)  # the recipe's ortho coefficient and layers, Nesterov, weight decay
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(batch_size, 3, 32, 32, generator=gen).to(device)
    y_a = torch.randint(0, num_classes, (batch_size,), generator=gen).to(device)
    y_b = y_a.roll(1)
    runners: dict[str, Callable[[], None]] = {}
    for kind in CAPTURE_KINDS:
        work = copy.deepcopy(model).to(device).train()
        loss_fn = make_loss("wls", num_classes=num_classes, epsilon=0.3).to(device)
        loss_fn.update_similarity(work)
        optimizer = torch.optim.SGD(work.parameters(), lr=1e-4, momentum=config.momentum, nesterov=True,
                                    weight_decay=config.weight_decay)
        step = make_step(kind, work, work, loss_fn, optimizer, config=config, mode=ExecutionMode(), device=device,
                         scaler=None)

        def run(step=step) -> None:
            step(x, y_a, y_b, 0.7)
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        # untimed: on CUDA the warm-up steps, the capture (or compile) and its first replay; on a CPU one call
        for _ in range(WARMUP_STEPS + 2 if device.type == "cuda" else 1):
            run()
        runners[f"step {kind if kind != 'off' else 'eager'}"] = run
    return runners
