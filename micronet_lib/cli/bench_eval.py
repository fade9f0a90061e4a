"""``micronet bench eval``: inference throughput (images/s) of MicroNet ver1/ver2 per execution mode.

Modes: ``fp32`` (the reference), ``channels_last``, ``bf16`` (autocast), ``masked`` (60 % random masks
attached, as a pruned checkpoint runs: the convs stay dense, docs/method.md §10) and ``compile``
(``torch.compile``; opt-in because compiling takes long on a CPU). Models are freshly initialised:
throughput does not depend on the weight values. Timing: median over ``--iters`` timed batches after
``--warmup`` untimed ones, under ``torch.inference_mode`` in eval mode.
"""

from __future__ import annotations

import json
import statistics
import time

__all__ = ["register", "run", "MODES", "DEFAULT_MODES", "benchmark"]

MODES = ("fp32", "channels_last", "bf16", "masked", "compile")
DEFAULT_MODES = ("fp32", "channels_last", "bf16", "masked")
MASKED_SPARSITY = 0.6  # the submitted checkpoints' global sparsity (docs/method.md §4.1)


def register(targets) -> None:
    p = targets.add_parser("eval", help="inference images/s per mode for micronet_v1 / micronet_v2")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--iters", type=int, default=3, help="timed batches per mode (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed batches per mode (default 1)")
    p.add_argument("--models", default="micronet_v1,micronet_v2", help="comma-separated model names")
    p.add_argument("--modes", default=",".join(DEFAULT_MODES), help=f"comma-separated subset of {','.join(MODES)}")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--device", default="cpu", help="cpu (default) | auto | cuda | cuda:N")
    p.add_argument("--json", action="store_true", help='print {"<model>/<mode>": images_per_s, ...}')
    p.set_defaults(func=run)


def _prepare(model_name: str, mode: str, device):
    import torch

    from micronet_lib.models import build_model
    from micronet_lib.pruning.masks import attach_mask

    torch.manual_seed(0)
    model = build_model(model_name).eval()
    if mode == "masked":
        gen = torch.Generator().manual_seed(0)
        for m in model.modules():
            if isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.ndim > 1:
                attach_mask(m, (torch.rand(m.weight.shape, generator=gen) >= MASKED_SPARSITY).float())
    model.to(device)
    if mode == "channels_last":
        model.to(memory_format=torch.channels_last)
    if mode == "compile":
        model = torch.compile(model)
    return model


def benchmark(model_name: str, mode: str, *, batch_size: int, iters: int, warmup: int, device: str = "cpu") -> float:
    """Images/s of ``model_name`` in ``mode`` (median batch time over ``iters``)."""
    import contextlib

    import torch

    if mode not in MODES:
        raise ValueError(f"unknown bench mode {mode!r}; allowed: {', '.join(MODES)}")
    dev = torch.device(device)
    model = _prepare(model_name, mode, dev)
    x = torch.randn(batch_size, 3, 32, 32, generator=torch.Generator().manual_seed(1)).to(dev)
    if mode == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    cast = torch.autocast(device_type=dev.type, dtype=torch.bfloat16) if mode == "bf16" else contextlib.nullcontext()
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    times = []
    with torch.inference_mode(), cast:
        for i in range(warmup + iters):
            sync()
            t0 = time.perf_counter()
            model(x)
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return batch_size / statistics.median(times)


def run(args) -> int:
    import torch

    from micronet_lib.cli import resolve_device
    from micronet_lib.models import model_builder

    for field in ("batch_size", "iters"):
        if getattr(args, field) < 1:
            raise ValueError(f"--{field.replace('_', '-')} {getattr(args, field)} must be >= 1")
    if args.warmup < 0:
        raise ValueError(f"--warmup {args.warmup} must be >= 0")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in models:
        model_builder(m)
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ValueError(f"unknown bench mode(s) {bad}; allowed: {', '.join(MODES)}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    results: dict[str, float] = {}
    for model_name in models:
        for mode in modes:
            results[f"{model_name}/{mode}"] = round(
                benchmark(model_name, mode, batch_size=args.batch_size, iters=args.iters, warmup=args.warmup, device=device), 1
            )
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"inference throughput, batch {args.batch_size}, {device}, {torch.get_num_threads()} thread(s), "
          f"median of {args.iters} (images/s)")
    for model_name in models:
        row = {mode: results[f"{model_name}/{mode}"] for mode in modes}
        best = max(row, key=row.get)
        cells = "  ".join(f"{mode} {v:8.1f}" for mode, v in row.items())
        print(f"  {model_name:<14} {cells}   fastest: {best} ({row[best] / row.get('fp32', row[best]):.2f}x fp32)"
              if "fp32" in row else f"  {model_name:<14} {cells}")
    return 0
