"""``micronet`` command line: one thin subcommand per library entry point.

Every module ``micronet_lib/cli/<name>.py`` (not starting with ``_`` or ``bench_``) defines
``register(subparsers)``, which adds its parser and sets ``func(args) -> int``. Adding a command is
adding a file. ``--device auto`` is resolved only here (``resolve_device``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

__all__ = ["main", "build_parser", "resolve_device"]


def resolve_device(name: str) -> str:
    """``auto`` → cuda, mps or cpu, whichever is available; otherwise validate the explicit name."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {name} requested but CUDA is not available; use --device cpu or auto")
    if name not in ("cpu", "mps") and not name.startswith("cuda"):
        raise SystemExit(f"error: unknown --device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    return name


def _command_modules(prefix: str):
    pkg = importlib.import_module(__name__)
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        is_bench = info.name.startswith("bench_")
        if (prefix == "bench_") == is_bench:
            yield importlib.import_module(f"{__name__}.{info.name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="micronet", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in _command_modules(""):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as exc:
        # Library errors are written to be read: one line, what was wrong and how to fix it.
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
