"""The run store: the one place that creates, locks, writes, verifies and reads run folders.

A run folder (``results/runs/<config hash>/``) holds

- ``config.json``: the resolved config (with its deviations); ``run.json``: the run's record of how it
  runs (config hash, torch threads, torch version, ...), written by :func:`write_record` only;
- ``metrics.jsonl`` (one line per epoch) and ``summary.json`` (at the end): what notebooks read;
- ``last.pt`` (everything to resume), ``last.prev.pt`` (the checkpoint before it, a hard link, so a
  corrupt ``last.pt`` has a way out), ``best.pt`` (the selected weights) and ``checkpoints.json``
  (their sha256, :mod:`micronet_lib.checksums`), checked on every read;
- while a process works on it, ``.lock`` (a ``filelock`` lock) and ``.lock.json`` (who holds it).

Every failure is a :class:`RunStoreError`: one line naming the file and the command that gets the
user out (the CLI prints it as ``error: …`` and exits 2).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import io
import json
import logging
import math
import os
import shlex
import socket
import sys
from pathlib import Path
from typing import Any, Iterator

import filelock
import torch

from micronet_lib import checksums
from micronet_lib.fileio import atomic_write_bytes

__all__ = [
    "RunStoreError", "RunLockedError", "CheckpointMissingError", "TrainingInterrupted",
    "lock", "make_run_dir", "clean_stale_temps", "resume_command",
    "write_text", "write_json", "read_json", "repair_hint", "read_metrics", "write_metrics",
    "save_checkpoint", "load_checkpoint", "verify_file", "use_previous", "start_over",
    "runtime_record", "write_record", "restore_config", "read_runtime", "read_record",
    "LAST", "PREVIOUS", "BEST", "CHECKPOINT_FORMAT",
]

log = logging.getLogger(__name__)

LAST = "last.pt"
PREVIOUS = "last.prev.pt"
BEST = "best.pt"
CHECKPOINT_FORMAT = 1
LOCK = ".lock"
HOLDER = ".lock.json"
RECORD = "run.json"
_TEXT_FILES = ("config.json", RECORD, "metrics.jsonl", "summary.json")


class RunStoreError(ValueError):
    """A run folder cannot be used as asked; the message names the file and the way out."""


class RunLockedError(RunStoreError):
    """Another process holds the run's lock."""


class CheckpointMissingError(RunStoreError, FileNotFoundError):
    """A checkpoint is needed but absent (e.g. a fresh clone: run records are committed, checkpoints are not)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``fit``: the run folder is consistent and resumable. ``str()`` says how."""

    def __init__(self, run_dir: Path, epochs_done: int, epochs_total: int):
        super().__init__(f"interrupted after epoch {epochs_done} of {epochs_total}; "
                         f"resume with `{resume_command(run_dir)}`")
        self.run_dir, self.epochs_done = Path(run_dir), epochs_done


def resume_command(run_dir: str | os.PathLike, *flags: str) -> str:
    return " ".join(["micronet train --resume", shlex.quote(str(run_dir)), *flags])


# ---------------------------------------------------------------------- folder and lock
def make_run_dir(run_dir: str | os.PathLike) -> Path:
    """Create ``run_dir`` (and parents); a path through a file or an unwritable place is one clear error."""
    run_dir = Path(run_dir)
    if str(run_dir) in ("", "."):
        raise RunStoreError("the run folder is empty; pass --runs-dir DIR (a writable folder)")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise RunStoreError(f"cannot create run folder {run_dir}: it is a file; pass --runs-dir pointing to a folder") from None
    except NotADirectoryError:
        raise RunStoreError(f"cannot create run folder {run_dir}: a part of that path is a file, not a folder; "
                            "pass --runs-dir pointing to a writable folder") from None
    except OSError as exc:
        raise RunStoreError(f"cannot create run folder {run_dir} ({exc.strerror}); pass --runs-dir pointing to a "
                            "writable folder") from None
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise RunStoreError(f"run folder {run_dir} is not writable; pass --runs-dir pointing to a writable folder")
    return run_dir


def _holder_record() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv)[:300]}


def _read_holder(run_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((run_dir / HOLDER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _describe(holder: dict[str, Any] | None) -> str:
    if holder is None:
        return "another process (its record .lock.json is not written yet)"
    return f"pid {holder.get('pid')} on host {holder.get('host')} since {holder.get('started')}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def lock(run_dir: str | os.PathLike, *, wait: bool = True, timeout: float | None = None) -> Iterator[Path]:
    """Hold the run folder exclusively (a ``filelock.FileLock`` on ``<run_dir>/.lock``).

    ``wait=False``: if another process holds it, raise :class:`RunLockedError` naming the holder (pid,
    host, start time). ``wait=True``: log who holds it and wait (at most ``timeout`` seconds, None =
    as long as it takes). The OS releases the lock of a process that dies, so a killed holder never
    blocks anyone; its leftover ``.lock.json`` is reported as a stale lock and replaced. On entry,
    stale hidden temp files of killed writers are removed. A folder this call created and that holds
    nothing but the lock afterwards (setup failed before training) is removed again.
    """
    run_dir = Path(run_dir)
    created = not run_dir.exists()
    make_run_dir(run_dir)
    flock = filelock.FileLock(str(run_dir / LOCK))
    try:
        flock.acquire(timeout=0)
    except filelock.Timeout:
        holder = _describe(_read_holder(run_dir))
        if not wait:
            raise RunLockedError(f"run {run_dir} is in use by {holder}; wait for it with --wait, or stop that process "
                                 "first") from None
        log.warning("run %s is in use by %s; waiting for it to finish (Ctrl-C to stop waiting)", run_dir, holder)
        try:
            flock.acquire(timeout=-1 if timeout is None else timeout)
        except filelock.Timeout:
            raise RunLockedError(f"run {run_dir} is still in use by {holder} after {timeout:g} s; try again later "
                                 "or stop that process") from None
    try:
        stale = _read_holder(run_dir)
        if stale is not None:
            dead = stale.get("host") == socket.gethostname() and isinstance(stale.get("pid"), int) and not _alive(stale["pid"])
            log.warning("broke the stale lock of run %s: %s %s", run_dir, _describe(stale),
                        "is no longer running" if dead else "no longer holds it")
        atomic_write_bytes(run_dir / HOLDER, json.dumps(_holder_record()).encode())
        clean_stale_temps(run_dir)
        yield run_dir
    finally:
        (run_dir / HOLDER).unlink(missing_ok=True)
        flock.release()
        if created and {p.name for p in run_dir.iterdir()} <= {LOCK}:
            (run_dir / LOCK).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                run_dir.rmdir()


def clean_stale_temps(run_dir: Path) -> list[Path]:
    """Remove ``.<name>.*.tmp`` files (``fileio.atomic_path``) that a killed writer left behind."""
    removed = []
    for tmp in sorted(run_dir.glob(".*.tmp")):
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    if removed:
        log.info("removed %d stale temp file(s) of a killed writer in %s: %s", len(removed), run_dir,
                 ", ".join(p.name for p in removed))
    return removed


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
    return ("restore it from version control (`git checkout -- " + shlex.quote(str(path)) + "`) or delete "
            f"{run_dir} and train the run again")


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
    out when the newest checkpoint turns out corrupt. See :mod:`micronet_lib.checksums` for why every
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
        return checksums.verify(path)
    except checksums.ChecksumError as exc:
        raise RunStoreError(f"{exc}; {_checkpoint_fix(path)}") from None


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load one of our checkpoints on CPU, weights-only, after checking its sha256 (STYLE.md point 10)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointMissingError(f"no checkpoint at {path} (checkpoints are not committed: train the run, "
                                     f"or resume it with `{resume_command(path.parent)}`)")
    verify_file(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load fails with many types on garbage (EOFError, UnpicklingError, RuntimeError)
        why = "the file is empty" if path.stat().st_size == 0 else f"{type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else ''}"
        raise RunStoreError(f"{path} is not a readable checkpoint ({why}); {_checkpoint_fix(path)}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise RunStoreError(f"{path} is not a micronet training checkpoint (format {CHECKPOINT_FORMAT}); "
                            f"{_checkpoint_fix(path)}")
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
