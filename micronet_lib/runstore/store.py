"""The run store: the one place that creates, locks, writes, verifies and reads run folders.

A run folder (``results/runs/<config hash>/``) holds

- ``config.json``: the resolved config (with its deviations); ``run.json``: the run's record of how it
  runs (config hash, torch threads, torch version, ...), written by :func:`write_record` only;
- ``metrics.jsonl`` (one line per epoch) and ``summary.json`` (at the end): what notebooks read;
- ``last.pt`` (everything to resume), ``last.prev.pt`` (the checkpoint before it, a hard link, so a
  corrupt ``last.pt`` has a way out), ``best.pt`` (the selected weights) and ``checkpoints.json``
  (their sha256, :mod:`micronet_lib.runstore.checksums`), checked on every read;
- while a process works on it, ``.lock`` (a ``filelock`` lock) and ``.lock.json`` (who holds it).

Every failure is a :class:`RunStoreError`: one line naming the file and the command that gets the
user out (the CLI prints it as ``error: …`` and exits 2). Creating the folder, its lock and the errors
are :mod:`micronet_lib.runstore.folder`'s, re-exported here.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import math
import os
import shlex
from pathlib import Path
from typing import Any, Iterator

import torch

from micronet_lib.runstore import checksums
from micronet_lib.fileio import atomic_write_bytes
from micronet_lib.runstore.folder import (HOLDER, LOCK, CheckpointMissingError, RunLockedError, RunStoreError,
                                           TrainingInterrupted, clean_stale_temps, lock, make_run_dir,
                                           resume_command, tracked_by_git)

__all__ = [
    "RunStoreError", "RunLockedError", "CheckpointMissingError", "TrainingInterrupted",
    "lock", "make_run_dir", "clean_stale_temps", "resume_command",
    "write_text", "write_json", "read_json", "repair_hint", "read_metrics", "write_metrics",
    "save_checkpoint", "load_checkpoint", "verify_file", "use_previous", "start_over",
    "history_incomplete", "restore_history", "repair_finished",
    "runtime_record", "write_record", "restore_config", "read_runtime", "read_record",
    "LAST", "PREVIOUS", "BEST", "CHECKPOINT_FORMAT",
]

log = logging.getLogger(__name__)

LAST = "last.pt"
PREVIOUS = "last.prev.pt"
BEST = "best.pt"
CHECKPOINT_FORMAT = 1
RECORD = "run.json"
_TEXT_FILES = ("config.json", RECORD, "metrics.jsonl", "summary.json")


# ---------------------------------------------------------------------- writes (disk full is one line)
@contextlib.contextmanager
def _disk_full_is_an_error(path: Path, nbytes: int) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        mb = max(1, math.ceil(nbytes * 1.1 / 1e6))
        raise RunStoreError(f"no space left writing {path}; free {mb} MB on that disk, then resume with "
                            f"`{resume_command(path.parent)}` (the files written before are intact)") from None


def _write_bytes(path: Path, data: bytes) -> None:
    with _disk_full_is_an_error(path, len(data)):
        atomic_write_bytes(path, data)


def write_text(path: str | os.PathLike, text: str) -> None:
    _write_bytes(Path(path), text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


# ---------------------------------------------------------------------- reads (corruption is one line)
def repair_hint(path: Path) -> str:
    """How to get out of a corrupt text file of a run folder."""
    run_dir = path.parent
    if (run_dir / LAST).exists():
        return f"run `{resume_command(run_dir)}`: it is rebuilt from {LAST}"
    if tracked_by_git(path):
        return ("restore it from version control (`git checkout -- " + shlex.quote(str(path)) + "`) or delete "
                f"{run_dir} and train the run again")
    return f"delete {run_dir} and train the run again (it is not under version control, so git cannot restore it)"


def read_json(path: str | os.PathLike, *, fix: str | None = None) -> Any:
    """Parse a JSON file of a run folder; a corrupt one raises ``RunStoreError`` naming it and ``fix``."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise RunStoreError(f"{path} is corrupt ({type(exc).__name__}: {str(exc)[:80]}); {fix or repair_hint(path)}") from None


def read_metrics(run_dir: str | os.PathLike, *, fix: str | None = None) -> list[dict[str, Any]]:
    """The epoch records of ``metrics.jsonl`` (``[]`` when absent); a bad line is an error naming it."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    for lineno, line in enumerate(path.read_bytes().decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not isinstance(row, dict) or "global_epoch" not in row:
            raise RunStoreError(f"{path} line {lineno} is corrupt (not an epoch record); {fix or repair_hint(path)}")
        rows.append(row)
    return rows


def write_metrics(run_dir: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    """Rewrite ``metrics.jsonl`` atomically (so a kill never leaves half a line)."""
    write_text(Path(run_dir) / "metrics.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


# ---------------------------------------------------------------------- checkpoints
def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any], *, keep_previous: bool = False) -> Path:
    """``torch.save`` ``payload`` (plus the format number) atomically, with its sha256 in the manifest.

    ``keep_previous``: the file it replaces stays as ``last.prev.pt`` (a hard link, no copy), the way
    out when the newest checkpoint turns out corrupt. See :mod:`micronet_lib.runstore.checksums` for why every
    instant of this sequence leaves verifiable files.
    """
    path = Path(path)
    folder = path.parent
    buffer = io.BytesIO()
    torch.save(dict(payload, format=CHECKPOINT_FORMAT), buffer)
    data = buffer.getvalue()
    new = checksums.digest_bytes(data)
    manifest = checksums.read_manifest(folder)
    old = manifest.get(path.name)
    rotate = keep_previous and old is not None and path.exists() and _matches(path, old)
    previous = folder / PREVIOUS
    if rotate:
        manifest[previous.name] = dict(manifest.get(previous.name) or {}, pending={k: old[k] for k in ("sha256", "bytes")})
    manifest[path.name] = dict(old or new, pending=new)
    _write_manifest(folder, manifest)
    if rotate:
        link = folder / f".{previous.name}.link.tmp"
        link.unlink(missing_ok=True)
        try:
            os.link(path, link)
        except OSError:  # no hard links on this file system: copy
            link.write_bytes(path.read_bytes())
        os.replace(link, previous)
        manifest[previous.name] = {k: old[k] for k in ("sha256", "bytes")}
    _write_bytes(path, data)
    manifest[path.name] = new
    _write_manifest(folder, manifest)
    return path


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    with _disk_full_is_an_error(folder / checksums.MANIFEST, 4096):
        checksums.write_manifest(folder, manifest)


def _matches(path: Path, entry: dict[str, Any]) -> bool:
    found = checksums.file_digest(path)["sha256"]
    return found == entry.get("sha256") or found == (entry.get("pending") or {}).get("sha256")


def _checkpoint_fix(path: Path) -> str:
    run_dir = path.parent
    if path.name == BEST and (run_dir / LAST).exists():
        return f"run `{resume_command(run_dir)}` to rebuild it from {LAST}"
    if path.name == LAST and (run_dir / PREVIOUS).exists():
        return (f"resume from the previous good checkpoint with `{resume_command(run_dir, '--from-previous')}`, "
                f"or start over with `{resume_command(run_dir, '--restart')}`")
    if path.name in (LAST, PREVIOUS):
        return f"start over with `{resume_command(run_dir, '--restart')}`"
    return "restore the file or train the run again"


def verify_file(path: str | os.PathLike) -> bool:
    """Check ``path`` against its folder's manifest: ``True`` verified, ``False`` no entry; else ``RunStoreError``."""
    path = Path(path)
    try:
        checksums.read_manifest(path.parent)
    except checksums.ChecksumError as exc:  # the manifest itself: --from-previous would read it too
        raise RunStoreError(str(exc)) from None
    try:
        return checksums.verify(path)
    except checksums.ChecksumError as exc:
        raise RunStoreError(f"{exc}; {_checkpoint_fix(path)}") from None


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load one of our checkpoints on CPU, weights-only, after checking its sha256.

    A checkpoint with no entry in ``checkpoints.json`` (the manifest deleted, or a run older than it) loads
    with a loud warning, and the returned dict says so (``verified`` False; ``fit`` records it in the run's
    ``run.json``); a verified one has ``verified`` True.
    """
    path = Path(path)
    if path.is_dir():
        raise RunStoreError(f"{path} is a folder, not a checkpoint file; name the file, e.g. {path / BEST}")
    if not path.is_file():
        raise CheckpointMissingError(f"no checkpoint at {path} (checkpoints are not committed: train the run, "
                                     f"or resume it with `{resume_command(path.parent)}`)")
    verified = verify_file(path)
    if not verified:
        log.warning("%s has no checksum in %s (deleted, or never written): it is loaded UNVERIFIED, so a corrupt file "
                    "would go unnoticed; the run records this. If in doubt, start over with `%s`", path,
                    path.parent / checksums.MANIFEST, resume_command(path.parent, "--restart"))
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load fails with many types on garbage (EOFError, UnpicklingError, RuntimeError)
        why = "the file is empty" if path.stat().st_size == 0 else f"{type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else ''}"
        raise RunStoreError(f"{path} is not a readable checkpoint ({why}); {_checkpoint_fix(path)}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise RunStoreError(f"{path} is not a micronet training checkpoint (format {CHECKPOINT_FORMAT}); "
                            f"{_checkpoint_fix(path)}")
    ckpt["verified"] = verified
    return ckpt


def use_previous(run_dir: Path) -> None:
    """Make ``last.prev.pt`` (verified) the checkpoint to resume from (``--from-previous``)."""
    previous = run_dir / PREVIOUS
    if not previous.exists():
        raise CheckpointMissingError(f"{previous} does not exist, so there is no previous checkpoint; start over with "
                                     f"`{resume_command(run_dir, '--restart')}`")
    load_checkpoint(previous)
    manifest = checksums.read_manifest(run_dir)
    manifest[LAST] = manifest.pop(PREVIOUS)
    _write_manifest(run_dir, manifest)
    os.replace(previous, run_dir / LAST)
    log.warning("resuming %s from its previous checkpoint (the newer last.pt was discarded)", run_dir)


def start_over(run_dir: Path) -> None:
    """Delete everything a run produced except ``config.json`` (``--restart``)."""
    for name in (LAST, PREVIOUS, BEST, checksums.MANIFEST, "metrics.jsonl", "summary.json", RECORD):
        (run_dir / name).unlink(missing_ok=True)
    log.warning("starting %s over: checkpoints, metrics and summary deleted", run_dir)


# ---------------------------------------------------------------------- the run's record
# ---------------------------------------------------------------------- repairs on restart
def history_incomplete(run_dir: Path, summary: dict[str, Any]) -> bool:
    """True when ``metrics.jsonl`` of a finished run is missing, corrupt, or holds fewer epochs than its summary."""
    try:
        return len(read_metrics(run_dir)) != summary.get("epochs")
    except RunStoreError:
        return True


def restore_history(run_dir: Path, ckpt: dict[str, Any]) -> list[dict[str, Any]]:
    """``metrics.jsonl`` through the checkpoint's epoch: kept, or rebuilt from the copy inside ``last.pt``."""
    through = ckpt["global_epoch"]
    path = run_dir / "metrics.jsonl"
    try:
        rows = [r for r in read_metrics(run_dir) if r["global_epoch"] <= through]
        problem = None if path.exists() else f"{path} is missing"
    except RunStoreError as exc:
        rows, problem = None, str(exc).split(";")[0]
    saved = ckpt.get("history")
    if saved is not None:
        if rows != saved:
            log.warning("%s; rebuilt its %d epoch line(s) from %s", problem or f"{path} disagrees with {LAST}",
                        len(saved), LAST)
        write_metrics(run_dir, saved)
        return list(saved)
    if rows is None or len(rows) < through:  # a checkpoint older than the saved history: nothing to rebuild from
        raise RunStoreError(f"{problem or f'{path} lacks epochs that {LAST} covers'} and {LAST} holds no "
                                  f"copy of it; start over with `{resume_command(run_dir, '--restart')}`")
    write_metrics(run_dir, rows)
    return rows


def repair_finished(run_dir: Path, ckpt: dict[str, Any]) -> None:
    """A finished run re-run: its history and ``best.pt`` are verified, and rebuilt from ``last.pt`` if broken."""
    restore_history(run_dir, ckpt)
    best = run_dir / BEST
    try:
        load_checkpoint(best)
        return
    except RunStoreError as exc:
        problem = str(exc).split(";")[0]
    if ckpt.get("best_state") is None:
        raise RunStoreError(f"{problem}; {LAST} holds no selected weights to rebuild it from: start over "
                                  f"with `{resume_command(run_dir, '--restart')}`")
    save_checkpoint(best, dict(model=ckpt["best_state"], arch=ckpt["arch"], best=ckpt["best"], config=ckpt["config"],
                                    data_id=ckpt["data_id"]))
    log.warning("%s; rebuilt it from the selected weights stored in %s", problem, LAST)



def runtime_record(device: torch.device | str) -> dict[str, Any]:
    """How the run executes, beyond its config: what changes floating-point results on the same config.

    The one place run-record fields are collected (issue #13 adds precision/memory-format details here).
    """
    return {"threads": torch.get_num_threads(), "device": str(torch.device(device).type), "torch": torch.__version__}


def write_record(run_dir: Path, config: Any, runtime: dict[str, Any]) -> None:
    """``config.json`` (config + deviations) and ``run.json`` (config hash + runtime): written only here."""
    write_json(run_dir / "config.json", config.to_dict(with_derived=True))
    write_json(run_dir / RECORD, {"config_hash": config.config_hash(), "runtime": runtime})


def restore_config(run_dir: Path, config: Any) -> None:
    """Rewrite a ``config.json`` that no longer reads as ``config`` (a finished run re-run after corruption)."""
    path = run_dir / "config.json"
    try:
        current = json.loads(path.read_text())
    except (OSError, ValueError):
        current = None
    if current != config.to_dict(with_derived=True):
        write_json(path, config.to_dict(with_derived=True))
        log.warning("rewrote %s from the run's checkpoint", path)


def read_runtime(run_dir: Path) -> dict[str, Any] | None:
    """``run.json`` of a run (``None`` for runs older than the record)."""
    path = run_dir / RECORD
    if not path.exists():
        return None
    data = read_json(path, fix=f"delete it (it is rewritten by `{resume_command(run_dir)}`)")
    return data if isinstance(data, dict) else None


def read_record(run_dir: str | os.PathLike) -> dict[str, Any]:
    """A finished run's record without its checkpoints: ``{"config", "summary", "metrics", "runtime"}``.

    What a notebook needs from a run on a fresh clone (the text files are committed, checkpoints are
    not). Missing files raise :class:`RunStoreError`; the checkpoints are read with
    :func:`load_checkpoint`, which raises :class:`CheckpointMissingError` when they are absent.
    """
    run_dir = Path(run_dir)
    for name in ("config.json", "summary.json"):
        if not (run_dir / name).is_file():
            raise RunStoreError(f"{run_dir / name} does not exist: {run_dir} is not a finished run; train it first")
    return {"config": read_json(run_dir / "config.json"), "summary": read_json(run_dir / "summary.json"),
            "metrics": read_metrics(run_dir), "runtime": (read_runtime(run_dir) or {}).get("runtime")}
