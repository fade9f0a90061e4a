"""Profile the training step on CUDA (torch.profiler): wall time vs GPU busy time and kernel launches.

Run by ``scripts/gpu-check.sh``. A step whose wall time is far above its GPU busy time is bound by the
host (Python and kernel launches), not by the GPU: the lever is then fewer launches (compile, graphs).
"""

from __future__ import annotations

import time

import torch
from torch.profiler import ProfilerActivity, profile

from micronet_lib import execution
from micronet_lib.regularizers import orthogonality_penalty
from micronet_lib.train.bench import DEFAULT_WEIGHTS, load_weights

STEPS = 5


def main() -> None:
    device = torch.device("cuda")
    model = load_weights(DEFAULT_WEIGHTS)
    make = execution.train_runner(model, batch_size=128, num_classes=100, device=device,
                                  ortho=lambda m: 0.7 * orthogonality_penalty(m))
    for mode in (execution.ExecutionMode(), execution.ExecutionMode("bf16", "channels_last")):
        step = make(mode)
        for _ in range(3):
            step()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            t0 = time.perf_counter()
            for _ in range(STEPS):
                step()
            wall = (time.perf_counter() - t0) / STEPS
        events = prof.key_averages()
        kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        busy = sum(e.self_device_time_total for e in kernels) / STEPS / 1e3
        launches = sum(e.count for e in kernels) / STEPS
        print(f"{mode.name}: wall {wall * 1e3:.1f} ms/step (profiled), GPU busy {busy:.1f} ms/step, "
              f"{launches:.0f} kernels/step" + ("" if kernels else " (no kernel rows: see the tables)"))
        print(events.table(sort_by="self_cpu_time_total", row_limit=10, max_name_column_width=40))
        print(events.table(sort_by="self_device_time_total", row_limit=8, max_name_column_width=40))


if __name__ == "__main__":
    main()
