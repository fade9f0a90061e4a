"""``micronet`` command line: one thin subcommand per library entry point.

Every module ``micronet_lib/cli/<name>.py`` (not starting with ``_`` or ``bench_``) defines
``register(subparsers)``, which adds its parser and sets ``func(args) -> int``. Adding a command is
adding a file. ``--device auto`` is resolved by ``micronet_lib.devices.resolve_device``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from micronet_lib.devices import resolve_device  # re-exported: notebooks import it from here

__all__ = ["main", "build_parser", "resolve_device", "check_numbers", "check_out_path"]


def check_numbers(**flags: int | float | None) -> None:
    """``--flag-name=value`` pairs that must be positive when given: checked before any data is loaded."""
    for name, value in flags.items():
        if value is not None and not value > 0:
            raise ValueError(f"--{name.replace('_', '-')} {value} must be a positive number")


def check_out_path(path: str | None, flag: str = "--out") -> None:
    """An output file path that can be written: not empty, not a folder, inside an existing folder."""
    import os
    from pathlib import Path

    if path is None:
        return
    if not path.strip():
        raise ValueError(f"{flag} is empty; give a file path such as pruned.pt")
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{flag} {path} is a folder; give a file path inside it, e.g. {p / 'pruned.pt'}")
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{flag} {path}: {parent} is a file, not a folder; give a path in a writable folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: {parent} is not writable; give a path in a writable folder")


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
    except KeyboardInterrupt as exc:  # Ctrl-C: no traceback; training says how to resume (store.TrainingInterrupted)
        print(str(exc).strip() or "interrupted (Ctrl-C)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
