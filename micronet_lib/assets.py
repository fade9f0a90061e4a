"""External files the project needs: the authors' released checkpoints and Fast-AutoAugment policies.

One pooch registry (name -> upstream URL + sha256; docs/method.md §4.1, §7.1). Lookup order for ``fetch``:

1. every folder in ``MICRONET_ASSETS`` (``os.pathsep``-separated), as ``<mirror>/<name>`` or
   ``<mirror>/kaist/<name>``: the offline mirror used by tests and CI;
2. the cache ``MICRONET_CACHE`` (default ``~/.cache/micronet``);
3. a download into that cache (pooch: temp file, sha256 check, then rename), with a short timeout
   because on some machines the network hangs rather than fails.

The sha256 is verified every time a file is handed out: a mismatch is an ``AssetChecksumError`` naming
the file, the expected and the actual digest; a mismatching file is never used. Offline and missing is
an ``AssetUnavailableError`` naming the asset, its URL and ``MICRONET_ASSETS``.

The policy file upstream is Python source; ``load_policies`` reads it as *data* with ``ast`` (each
function's list literal through ``ast.literal_eval``) and never imports or executes it.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "AssetUnavailableError",
    "AssetChecksumError",
    "Asset",
    "UPSTREAM_COMMIT",
    "POLICY_SET_SIZES",
    "fetch",
    "list_assets",
    "asset_url",
    "asset_sha256",
    "mirror_dirs",
    "cache_dir",
    "sha256_of",
    "load_policies",
    "parse_policy_source",
    "validate_policies",
]

log = logging.getLogger(__name__)

# docs/method.md "Upstream": later commits change only the README, so this commit pins every file.
UPSTREAM_COMMIT = "fb41bbb2fd0f238ec775930cba8eb4b429606a98"
UPSTREAM_BASE = f"https://raw.githubusercontent.com/Kthyeon/micronet_neurips_challenge/{UPSTREAM_COMMIT}/"

# Seconds for connect and for each read; a hanging network must fail fast, not block a test run.
DOWNLOAD_TIMEOUT_S = 20.0

ENV_MIRRORS = "MICRONET_ASSETS"
ENV_CACHE = "MICRONET_CACHE"
# Set to 1 to forbid downloads (a missing asset then fails at once instead of after a timeout).
ENV_OFFLINE = "MICRONET_OFFLINE"


class AssetUnavailableError(RuntimeError):
    """The asset is in no mirror, not cached, and could not be downloaded."""


class AssetChecksumError(ValueError):
    """A file's sha256 differs from the registry: it is never used."""


@dataclass(frozen=True)
class Asset:
    """One registry row. ``upstream`` is the path in the authors' repository, or None when the file
    is derived (then ``source`` names the registry asset it is derived from)."""

    name: str
    sha256: str
    upstream: str | None
    source: str | None = None

    def __post_init__(self) -> None:
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256):
            raise ValueError(f"Asset.sha256 for {self.name!r} must be 64 lowercase hex digits, got {self.sha256!r}")
        if (self.upstream is None) == (self.source is None):
            raise ValueError(f"Asset {self.name!r}: exactly one of upstream= and source= must be given")


# docs/method.md §4.1 (checkpoints) and §7.1 (policies); the same digests as ../shared/assets/README.md.
_REGISTRY: dict[str, Asset] = {
    a.name: a
    for a in (
        Asset("micronet_v1_pr_60.t7", "8f78e1d6fceea4163af444f923702c9d8de9c66135e19921aab72512d4d602b5",
              "Checkpoint_ver1/micronet_v1_pr_60.t7"),
        Asset("micronet_v2_pr_15.t7", "94e62f31454e878f30cd1452e1b5c289712d0e03d44159ae63fe914f28c192b8",
              "Checkpoint_ver2/micronet_v2_pr_15.t7"),
        Asset("micronet_v2_pr_30.t7", "8fd49c2eb657f59ca5a6beae81492108269f55eb65f1bf5c70fe5204f6ca855e",
              "Checkpoint_ver2/micronet_v2_pr_30.t7"),
        Asset("micronet_v2_pr_45.t7", "11e8aa8aec8f30da327f5690fe63ef0878ea428ad0c284159fbfa6d470e18577",
              "Checkpoint_ver2/micronet_v2_pr_45.t7"),
        Asset("micronet_v2_pr_60.t7", "c578f599a064319ea704d592e926947276bd46c71083136afb71d36d3424114c",
              "Checkpoint_ver2/micronet_v2_pr_60.t7"),
        Asset("cifar100_fast_aug.py", "03af49759eb8141bfde16d82ba0acbfea82d9c43532f0d15ffa97bec33974382",
              "Utils/cifar100_fast_aug.py"),
        # A JSON copy of the four lists (mirror only); upstream has just the .py it was derived from.
        Asset("cifar100_fast_aug.json", "70aa17f4c55b27c43308f9be600389af4f6bfcf33714383af51324f2cd7e3bc7",
              None, source="cifar100_fast_aug.py"),
    )
}

# docs/method.md §7.4: number of sub-policies per set, keyed by the upstream function name.
POLICY_SET_SIZES: dict[str, int] = {
    "fa_wresnet40x2_cifar100": 500,
    "fa_wresnet40x2_cifar100_r5": 490,
    "fa_wresnet28x10_cifar100": 496,
    "fa_shake26_2x96d_cifar100": 498,
}


def _entry(name: str) -> Asset:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown asset {name!r}; known assets: {', '.join(list_assets())}") from None


def list_assets() -> list[str]:
    """Registered asset names, sorted."""
    return sorted(_REGISTRY)


def asset_sha256(name: str) -> str:
    return _entry(name).sha256


def asset_url(name: str) -> str:
    """Pinned upstream URL; for a derived asset, the URL of the upstream file it is derived from."""
    entry = _entry(name)
    if entry.upstream is None:
        return asset_url(entry.source)
    return UPSTREAM_BASE + entry.upstream


def mirror_dirs() -> list[Path]:
    """Folders named by ``MICRONET_ASSETS`` (empty entries ignored), in search order."""
    raw = os.environ.get(ENV_MIRRORS, "")
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()]


def cache_dir() -> Path:
    """``MICRONET_CACHE`` or ``~/.cache/micronet`` (not created here; pooch creates it on download)."""
    return Path(os.environ.get(ENV_CACHE) or Path.home() / ".cache" / "micronet").expanduser()


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# Verified files, keyed by (path, size, mtime): re-hashing 4 MB per load is cheap, but tests load often.
_verified: dict[tuple[str, int, int], str] = {}


def _verify(path: Path, entry: Asset) -> Path:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    actual = _verified.get(key) or sha256_of(path)
    if actual != entry.sha256:
        raise AssetChecksumError(
            f"checksum mismatch for asset {entry.name!r} at {path}: expected sha256 {entry.sha256}, "
            f"got {actual}; replace or delete the file"
        )
    _verified[key] = actual
    return path


def _unavailable(entry: Asset, reason: str) -> AssetUnavailableError:
    where = [str(d) for d in mirror_dirs()] or ["(none set)"]
    hint = (
        f"; it is derived from {entry.source!r}" if entry.upstream is None else ""
    )
    return AssetUnavailableError(
        f"asset {entry.name!r} is unavailable ({reason}){hint}. Upstream URL: {asset_url(entry.name)}. "
        f"Put the file in a folder and set {ENV_MIRRORS} to it (searched: {', '.join(where)}; "
        f"cache: {cache_dir()})"
    )


def fetch(name: str) -> Path:
    """Local path of a verified copy of asset ``name`` (mirror, then cache, then download).

    Raises ``KeyError`` for an unknown name, ``AssetChecksumError`` for a file whose sha256 differs
    (mirror, cache or download) and ``AssetUnavailableError`` when no copy can be had.
    """
    entry = _entry(name)
    for mirror in mirror_dirs():
        for candidate in (mirror / name, mirror / "kaist" / name):
            if candidate.is_file():
                log.debug("asset %s from mirror %s", name, candidate)
                return _verify(candidate, entry)
    cached = cache_dir() / name
    if cached.is_file():
        return _verify(cached, entry)
    if entry.upstream is None:
        raise _unavailable(entry, "it has no upstream copy, only mirrors hold it")
    if os.environ.get(ENV_OFFLINE, "") not in ("", "0", "false", "False"):
        raise _unavailable(entry, f"{ENV_OFFLINE} is set, so nothing is downloaded")
    return _download(entry)


# After a failed download, later fetches in this process fail at once for a while instead of each
# waiting out the timeout again (a hanging network would otherwise cost 20 s per asset).
NETWORK_RETRY_AFTER_S = 300.0
_network_down_until = 0.0
_network_down_reason = ""


def _download(entry: Asset) -> Path:
    global _network_down_until, _network_down_reason
    import pooch
    import requests

    if time.monotonic() < _network_down_until:
        raise _unavailable(entry, f"an earlier download in this process failed: {_network_down_reason}")

    registry = pooch.create(
        path=cache_dir(),
        base_url="",
        registry={entry.name: f"sha256:{entry.sha256}"},
        urls={entry.name: asset_url(entry.name)},
        # A cached file with the wrong hash is an error, never silently replaced.
        allow_updates=False,
    )
    downloader = pooch.HTTPDownloader(progressbar=False, timeout=DOWNLOAD_TIMEOUT_S)
    log.info("downloading asset %s from %s", entry.name, asset_url(entry.name))
    try:
        return Path(registry.fetch(entry.name, downloader=downloader))
    except requests.exceptions.RequestException as exc:
        _network_down_until = time.monotonic() + NETWORK_RETRY_AFTER_S
        _network_down_reason = f"{type(exc).__name__} for {asset_url(entry.name)}"
        raise _unavailable(entry, f"download failed: {type(exc).__name__}: {exc}") from exc
    except ValueError as exc:
        # pooch reports a hash mismatch of the downloaded temp file as ValueError and deletes it.
        raise AssetChecksumError(
            f"downloaded asset {entry.name!r} from {asset_url(entry.name)} failed verification "
            f"(expected sha256 {entry.sha256}): {exc}"
        ) from exc


# --------------------------------------------------------------------------------------------- policies

Op = tuple[str, float, float]
SubPolicy = tuple[Op, Op]


def _as_policy_set(set_name: str, raw: object) -> list[SubPolicy]:
    """Check one policy set's shape (docs/method.md §7.1) and convert it to tuples."""
    if not isinstance(raw, (list, tuple)) or not raw:
        raise ValueError(f"policy set {set_name!r} must be a non-empty list of sub-policies, got {type(raw).__name__}")
    out: list[SubPolicy] = []
    for i, sub in enumerate(raw):
        if not isinstance(sub, (list, tuple)) or len(sub) != 2:
            raise ValueError(f"policy set {set_name!r} sub-policy {i}: expected exactly 2 ops, got {sub!r}")
        ops = []
        for j, op in enumerate(sub):
            ok = (
                isinstance(op, (list, tuple)) and len(op) == 3 and isinstance(op[0], str)
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in op[1:])
            )
            if not ok or not (0.0 <= op[1] <= 1.0 and 0.0 <= op[2] <= 1.0):
                raise ValueError(
                    f"policy set {set_name!r} sub-policy {i} op {j}: expected (name: str, p in [0, 1], "
                    f"level in [0, 1]), got {op!r}"
                )
            ops.append((op[0], float(op[1]), float(op[2])))
        out.append((ops[0], ops[1]))
    return out


def validate_policies(raw: dict, *, expected_sizes: dict[str, int] | None = None) -> dict[str, list[SubPolicy]]:
    """Validate every set (2 ops of (str, p, level) each); optionally check the set names and sizes."""
    if not isinstance(raw, dict):
        raise ValueError(f"policies must be a dict of set name -> list, got {type(raw).__name__}")
    out = {name: _as_policy_set(name, value) for name, value in raw.items()}
    if expected_sizes is not None:
        if set(out) != set(expected_sizes):
            raise ValueError(f"policy sets {sorted(out)} differ from the expected {sorted(expected_sizes)}")
        for name, n in expected_sizes.items():
            if len(out[name]) != n:
                raise ValueError(f"policy set {name!r} has {len(out[name])} sub-policies, expected {n} (docs/method.md §7.4)")
    return out


def parse_policy_source(source: str) -> dict[str, list[SubPolicy]]:
    """Policy sets from the upstream Python file, read as data.

    Each top-level ``def f(): p = [...]; return p`` contributes ``f -> literal``: the first list literal
    assigned (or returned) in the body is evaluated with ``ast.literal_eval``. Nothing is executed.
    """
    tree = ast.parse(source)
    found: dict[str, object] = {}
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for stmt in node.body:
            value = stmt.value if isinstance(stmt, (ast.Assign, ast.Return)) else None
            if isinstance(value, ast.List):
                try:
                    found[node.name] = ast.literal_eval(value)
                except ValueError as exc:
                    raise ValueError(f"policy function {node.name!r} (line {value.lineno}) is not a pure literal: {exc}") from exc
                break
    if not found:
        raise ValueError("no policy functions with a list literal found in the policy source")
    return validate_policies(found)


def load_policies(path: str | os.PathLike | None = None) -> dict[str, list[SubPolicy]]:
    """The four Fast-AutoAugment CIFAR-100 policy sets (docs/method.md §7), keyed by upstream function name.

    Uses the JSON copy when a mirror or the cache holds it, else fetches the upstream ``.py`` and parses
    it with ``ast``. Both are sha256-verified; set sizes are checked against docs/method.md §7.4.

    ``path``: a policy file of the same format instead (JSON ``{set: [...]}`` or the ``.py`` layout), e.g.
    one written by the augmentation search (docs/method.md §7.6); its sets are validated, any size.
    """
    if path is not None:
        return _load_policy_file(Path(path))
    try:
        path = fetch("cifar100_fast_aug.json")
        raw = json.loads(path.read_text(encoding="utf-8"))
        return validate_policies(raw, expected_sizes=POLICY_SET_SIZES)
    except AssetUnavailableError:
        log.info("policy JSON not in a mirror or the cache; reading the upstream .py as data")
    path = fetch("cifar100_fast_aug.py")
    parsed = parse_policy_source(path.read_text(encoding="utf-8"))
    return validate_policies(parsed, expected_sizes=POLICY_SET_SIZES)


def _load_policy_file(path: Path) -> dict[str, list[SubPolicy]]:
    if not path.is_file():
        raise FileNotFoundError(f"policy file {path} does not exist; give the path of a policy .json "
                                "(e.g. written by `micronet search-augment`)")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".py":
        return parse_policy_source(text)
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"policy file {path} is not valid JSON ({exc}); expected {{set name: [[[op, p, level], "
                         "[op, p, level]], ...]}}") from None
    return validate_policies(raw)
