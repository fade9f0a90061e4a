"""``micronet bench eval``: inference images/s per execution mode vs the authors-style fp32 forward (ver2)."""

from __future__ import annotations

__all__ = ["register"]


def register(targets) -> None:
    from micronet_lib.cli.bench_train import _common
    from micronet_lib.bench.measure import DEFAULT_WEIGHTS

    parser = targets.add_parser("eval", help="inference images/s per mode, vs the authors-style fp32 forward")
    _common(parser, DEFAULT_WEIGHTS, batch=256)
    parser.set_defaults(func=_run)


def _run(args) -> int:
    from micronet_lib.cli.bench_train import run_target
    from micronet_lib.bench.measure import bench_eval

    return run_target(args, bench_eval, "evaluation forward (BatchNorm folded and conv + hard-swish fused on this project's side)")
