"""``micronet bench train``: images/s of a ver2 training step at batch 128, fp32 eager vs faster modes."""

from __future__ import annotations

import json

__all__ = ["register"]


def register(subparsers) -> None:
    from micronet_lib.train.bench import MODES

    parser = subparsers.add_parser("train", help="training-step images/s (ver2, batch 128) per execution mode")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per mode (median reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per mode (includes compilation)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--model", default="micronet_v2")
    parser.add_argument("--device", default="cpu", help="cpu (the figure the issue asks for), cuda, auto")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--modes", nargs="+", default=["fp32_eager", "channels_last", "compile_channels_last"],
                        choices=list(MODES), help="modes to time; fp32_eager is the baseline")
    parser.add_argument("--json", action="store_true", help="print {mode: images/s} as JSON only")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    from micronet_lib.cli import resolve_device
    from micronet_lib.train.bench import bench_train

    result = bench_train(modes=tuple(args.modes), steps=args.steps, warmup=args.warmup, batch_size=args.batch_size,
                         model_name=args.model, device=resolve_device(args.device), threads=args.threads)
    if args.json:
        print(json.dumps({k: round(v, 2) for k, v in result.items()}))
        return 0
    base = result["fp32_eager"]
    for mode, ips in result.items():
        print(f"{mode:>24s}: {ips:8.1f} images/s  ({ips / base:.2f}x fp32 eager)")
    best = max(result, key=result.get)
    print(f"fastest: {best} ({result[best] / base:.2f}x)")
    return 0
