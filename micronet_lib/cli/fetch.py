"""``micronet fetch [NAME ...]``: download (or find in a mirror) and verify the released assets."""

from __future__ import annotations

from micronet_lib import assets

__all__ = ["register"]


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "fetch", help="download or locate the authors' released assets, verified by sha256",
        description="Looks in MICRONET_ASSETS mirrors first, then the cache (MICRONET_CACHE), then downloads.",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"assets to fetch (default: all): {', '.join(assets.list_assets())}")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    if not args.names:
        # Default: the checkpoints, plus the policies in whichever form exists (mirror JSON or upstream .py).
        names = [n for n in assets.list_assets() if n.endswith(".t7")]
        failed = _fetch_each(names)
        try:
            sets = assets.load_policies()
            print(f"policies\t{len(sets)} Fast-AutoAugment sets: " + ", ".join(f"{k} ({len(v)})" for k, v in sets.items()))
        except assets.AssetUnavailableError as exc:
            print(f"policies\tunavailable: {exc}")
            failed += 1
        return 1 if failed else 0
    names = args.names
    unknown = [n for n in names if n not in assets.list_assets()]
    if unknown:
        raise ValueError(f"unknown asset(s) {', '.join(unknown)}; known: {', '.join(assets.list_assets())}")
    return 1 if _fetch_each(names) else 0


def _fetch_each(names: list[str]) -> int:
    failed = 0
    for name in names:
        try:
            print(f"{name}\t{assets.fetch(name)}")
        except assets.AssetUnavailableError as exc:
            # the upstream .py and the mirror-only .json are alternatives; report each missing one
            print(f"{name}\tunavailable: {exc}")
            failed += 1
    return failed
