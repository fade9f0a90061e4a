"""``micronet bench train``: training-step images/s per execution mode vs the authors-style step (ver2)."""

from __future__ import annotations

__all__ = ["register"]


def register(subparsers) -> None:
    from micronet_lib.bench.measure import DEFAULT_WEIGHTS

    parser = subparsers.add_parser("train", help="training-step images/s per mode, vs the authors-style fp32 step")
    _common(parser, DEFAULT_WEIGHTS, batch=128)
    parser.add_argument("--aten-bn", action="store_true",
                        help="also time each channels-last mode with ATen's BatchNorm and squeeze-excitation "
                             "instead of the training kernels")
    parser.add_argument("--capture", action="store_true",
                        help="also time the paper-recipe step eager, as one CUDA graph and under reduce-overhead "
                             "compile (TrainConfig.capture_step; on a CPU both run the static step eagerly)")
    parser.set_defaults(func=_run)


def _common(parser, default_weights: str, *, batch: int) -> None:
    from micronet_lib.bench.printout import add_machine_options

    parser.add_argument("--weights", default=default_weights,
                        help=f"released name or checkpoint (default {default_weights}); 'none': fresh init")
    parser.add_argument("--batch-size", type=int, default=batch)
    parser.add_argument("--steps", type=int, default=3, help="calls per timed block (default 3)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating blocks per mode (default 3; median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls per mode (default 1)")
    parser.add_argument("--compile", action="store_true",
                        help="also time each mode under torch.compile (compiling takes about a minute or more per mode on a CPU)")
    add_machine_options(parser)


def _check(args) -> None:
    import torch

    for name in ("batch_size", "steps", "rounds"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} {getattr(args, name)} must be >= 1")
    if args.warmup < 0:
        raise ValueError(f"--warmup {args.warmup} must be >= 0")
    if args.threads is not None:
        torch.set_num_threads(args.threads)


def run_target(args, bench, title: str, **options) -> int:
    from micronet_lib.cli import resolve_device
    from micronet_lib.bench.printout import print_result

    _check(args)
    weights = None if args.weights.lower() == "none" else args.weights
    result = bench(weights=weights, batch_size=args.batch_size, steps=args.steps, rounds=args.rounds,
                   warmup=args.warmup, device=resolve_device(args.device), compile=args.compile, **options)
    print_result(result, title=f"{title}, batch {args.batch_size}, weights {weights or 'fresh init'}", as_json=args.json)
    return 0


def _run(args) -> int:
    from micronet_lib.bench.measure import bench_train

    return run_target(args, bench_train, "training step (CE + 0.7·ortho, Nesterov SGD)", aten_bn=args.aten_bn,
                      capture=args.capture)
