"""Profile the training step on CUDA (torch.profiler): wall time vs GPU busy time and kernel launches.

Run by ``scripts/gpu-check.sh``. A step whose wall time is far above its GPU busy time is bound by the
host (Python and kernel launches), not by the GPU: the lever is then fewer launches (compile, graphs).
The last figure is that lever measured: the same fp32 step captured once as a CUDA graph and replayed
(an experiment here, not a mode of ``fit``; the first check found the eager step host-bound).
"""

from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from micronet_lib.accel import execution
from micronet_lib.regularizers import orthogonality_penalty
from micronet_lib.bench.measure import DEFAULT_WEIGHTS, load_weights

STEPS = 5


def graphed_step(model: torch.nn.Module, *, batch_size: int = 128, num_classes: int = 100,
                 calls: int = 20) -> tuple[float, float]:
    """(eager, graph) seconds per fp32 training step (forward, CE + 0.7·ortho, backward, Nesterov SGD)."""
    device = torch.device("cuda")
    work = copy.deepcopy(model).to(device).train()
    x = torch.randn(batch_size, 3, 32, 32, device=device)
    y = torch.arange(batch_size, device=device) % num_classes
    opt = torch.optim.SGD(work.parameters(), lr=1e-4, momentum=0.9, nesterov=True, weight_decay=1e-5)

    def step() -> None:
        opt.zero_grad(set_to_none=False)  # the gradients keep their memory: the graph writes into it
        loss = F.cross_entropy(work(x), y) + 0.7 * orthogonality_penalty(work)
        loss.backward()
        opt.step()

    def timed(run) -> float:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(calls):
            run()
        torch.cuda.synchronize()
        return (time.perf_counter() - t0) / calls

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the default stream, as capture requires; makes the
        for _ in range(3):         # gradients and momentum buffers the graph will reuse
            step()
    torch.cuda.current_stream().wait_stream(side)
    eager = timed(step)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return eager, timed(graph.replay)


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
    eager, graphed = graphed_step(model)
    print(f"fp32 step as one CUDA graph: eager {eager * 1e3:.1f} ms, graph replay {graphed * 1e3:.1f} ms "
          f"({eager / graphed:.1f}x)")


if __name__ == "__main__":
    main()
