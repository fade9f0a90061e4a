"""``micronet bench <target>``: throughput benchmarks. Each ``cli/bench_<target>.py`` adds a target."""

from __future__ import annotations

from micronet_lib.cli import _command_modules

__all__ = ["register"]


def register(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="throughput benchmarks (images/s)")
    targets = parser.add_subparsers(dest="target", required=True)
    for module in _command_modules("bench_"):
        module.register(targets)
