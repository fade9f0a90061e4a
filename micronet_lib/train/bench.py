"""Training-step throughput (images/s) of ``fit``'s inner step in several execution modes.

One step is what ``engine.fit`` does per batch (docs/method.md §5.5): forward in train mode, cross-entropy
+ 0.7 · orthogonality over the 68 1×1 convs, backward, Nesterov SGD step with weight decay. Inputs are
random tensors: the data pipeline is benchmarked separately (``micronet bench augment``).

Modes are timed round-robin (one step of each mode in turn) so that background load on a shared
machine hits every mode alike; the reported figure is images / median step time.
"""

from __future__ import annotations

import logging
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

__all__ = ["MODES", "bench_train", "make_step"]

log = logging.getLogger(__name__)

# name → (channels_last, compile, autocast dtype or None)
MODES: dict[str, tuple[bool, bool, torch.dtype | None]] = {
    "fp32_eager": (False, False, None),
    "channels_last": (True, False, None),
    "bf16_eager": (False, False, torch.bfloat16),
    "compile": (False, True, None),
    "compile_channels_last": (True, True, None),
}


def make_step(mode: str, *, model_name: str = "micronet_v2", batch_size: int = 128, num_classes: int = 100,
              ortho_coef: float = 0.7, device: str = "cpu", seed: int = 0) -> Callable[[], None]:
    """A closure running one training step of ``mode`` on fixed random inputs."""
    from micronet_lib.models import build_model
    from micronet_lib.regularizers import orthogonality_penalty

    if mode not in MODES:
        raise ValueError(f"unknown bench mode {mode!r}; allowed: {', '.join(MODES)}")
    channels_last, compile_, dtype = MODES[mode]
    torch.manual_seed(seed)
    model = build_model(model_name, num_classes=num_classes).to(device).train()
    x = torch.randn(batch_size, 3, 32, 32, device=device)
    y = torch.randint(0, num_classes, (batch_size,), device=device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    forward = torch.compile(model) if compile_ else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-5)
    device_type = torch.device(device).type

    def step() -> None:
        with torch.autocast(device_type=device_type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = forward(x)
        loss = F.cross_entropy(logits.float(), y)
        if ortho_coef:
            loss = loss + ortho_coef * orthogonality_penalty(model)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device_type == "cuda":
            torch.cuda.synchronize()

    return step


def bench_train(*, modes: tuple[str, ...] = ("fp32_eager", "channels_last", "compile_channels_last"), steps: int = 5,
                warmup: int = 2, batch_size: int = 128, model_name: str = "micronet_v2", device: str = "cpu",
                threads: int | None = None) -> dict[str, float]:
    """``{mode: images/s}``, all modes measured in this process, interleaved step by step."""
    if steps < 1 or warmup < 0:
        raise ValueError(f"steps={steps} must be >= 1 and warmup={warmup} >= 0")
    if "fp32_eager" not in modes:
        raise ValueError("modes must include 'fp32_eager', the baseline every other mode is compared with")
    if threads is not None:
        torch.set_num_threads(threads)
    steppers = {m: make_step(m, model_name=model_name, batch_size=batch_size, device=device) for m in modes}
    for mode, step in steppers.items():
        t0 = time.perf_counter()
        for _ in range(warmup):  # compile happens here
            step()
        log.info("%s: warm-up %.1f s", mode, time.perf_counter() - t0)
    times: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(steps):
        for mode, step in steppers.items():
            t0 = time.perf_counter()
            step()
            times[mode].append(time.perf_counter() - t0)
    return {m: batch_size / statistics.median(ts) for m, ts in times.items()}
