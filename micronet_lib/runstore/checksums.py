"""sha256 manifest of the checkpoints in one folder (``checkpoints.json``), written beside them.

Entry per file name: ``{"sha256": ..., "bytes": ...}``, plus ``"pending"`` (the same pair) while a new
version of the file is being written. A writer records ``pending`` first, replaces the file
atomically, then promotes ``pending``; so after a kill at any instant the file on disk matches one
of its entry's two digests, and anything else (a flipped byte, a truncated or foreign file) is
corruption. The module depends on nothing else in the project, so both the run store
(``micronet_lib.runstore.store``) and the checkpoint readers (``models.checkpoints``, ``pruning.checkpoint``)
use it; :func:`torch_load` is their one way to open a ``.pt`` file.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

from micronet_lib.fileio import atomic_write_json

__all__ = ["MANIFEST", "ChecksumError", "digest_bytes", "file_digest", "read_manifest", "write_manifest", "verify",
           "torch_load"]

MANIFEST = "checkpoints.json"


class ChecksumError(ValueError):
    """A file does not match the digest recorded for it (or the manifest itself is unreadable)."""


def digest_bytes(data: bytes) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def file_digest(path: str | os.PathLike) -> dict[str, Any]:
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return {"sha256": digest, "bytes": Path(path).stat().st_size}


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The folder's manifest (``{}`` when there is none); an unreadable one raises ``ChecksumError``."""
    path = Path(folder) / MANIFEST
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ChecksumError(f"{path} is corrupt ({type(exc).__name__}); delete it: the checkpoints beside it then load "
                            "unverified, with a warning (and a training run records it)") from None
    if not isinstance(data, dict):
        raise ChecksumError(f"{path} holds a {type(data).__name__}, not a mapping; delete it: the checkpoints beside it "
                            "then load unverified, with a warning (and a training run records it)")
    return data


def write_manifest(folder: str | os.PathLike, manifest: dict[str, Any]) -> None:
    atomic_write_json(Path(folder) / MANIFEST, manifest)


def verify(path: str | os.PathLike) -> bool:
    """``True`` if ``path`` matches its manifest entry, ``False`` if it has none; raises ``ChecksumError`` on a mismatch."""
    path = Path(path)
    entry = read_manifest(path.parent).get(path.name)
    if not entry:
        return False
    found = file_digest(path)
    accepted = [entry] + ([entry["pending"]] if entry.get("pending") else [])
    if any(found["sha256"] == e.get("sha256") for e in accepted):
        return True
    if found["bytes"] == 0:
        why = "the file is empty"
    elif all(found["bytes"] != e.get("bytes") for e in accepted):
        why = f"{found['bytes']} bytes, {entry.get('bytes')} recorded: truncated or replaced"
    else:
        why = f"sha256 {found['sha256'][:12]}…, {str(entry.get('sha256'))[:12]}… recorded: the file was altered"
    raise ChecksumError(f"{path} fails its checksum ({why})")


def torch_load(path: str | os.PathLike) -> Any:
    """``torch.load`` on the CPU, weights-only, after the manifest check (if the folder has one).

    A foreign, empty, truncated or malicious file is one ``ValueError`` naming it, never a traceback
    from deep inside the unpickler (which raises many types: UnpicklingError, EOFError, KeyError, ...).
    """
    import torch

    path = Path(path)
    try:
        verify(path)
    except ChecksumError as exc:
        raise ChecksumError(f"{exc}; if it is a training run's checkpoint, `micronet train --resume {path.parent}` "
                            "rebuilds best.pt or says how to recover") from None
    try:
        with warnings.catch_warnings():  # torch warns about the protocol of a foreign pickle before refusing it
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        lines = str(exc).strip().splitlines()
        if path.stat().st_size == 0:
            why = "the file is empty"
        elif "Weights only load failed" in str(exc):  # torch's advice to retry unsafely is not passed on
            why = "weights-only loading refused it: garbage, or a pickle of objects other than tensors"
        else:
            why = f"{type(exc).__name__}: {lines[0][:200] if lines else ''}"
        raise ValueError(f"{path.name} is not a readable PyTorch checkpoint ({why})") from None
