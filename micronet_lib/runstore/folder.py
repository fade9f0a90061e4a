"""The run folder itself and who holds it: the store's errors, creating the folder, its lock.

The lower half of :mod:`micronet_lib.runstore.store` (which re-exports every public name here): a run
folder is created by :func:`make_run_dir`, held exclusively by :func:`lock` (a ``filelock`` lock on
``.lock`` plus ``.lock.json`` naming the holder), and every failure is a :class:`RunStoreError`: one line
naming the file and the command that gets the user out.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import shlex
import socket
import sys
from pathlib import Path
from typing import Any, Iterator

import filelock

from micronet_lib.fileio import atomic_write_bytes

log = logging.getLogger(__name__)

LOCK = ".lock"
HOLDER = ".lock.json"


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
