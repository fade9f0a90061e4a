"""The run folder itself and who holds it: the store's errors, creating the folder, its lock.

The lower half of :mod:`micronet_lib.runstore.store` (which re-exports every public name here): a run
folder is created by :func:`make_run_dir`, held exclusively by :func:`lock` (a ``filelock`` lock on
``.lock`` plus ``.lock.json`` naming the holder), and every failure is a :class:`RunStoreError`: one line
naming the file and the command that gets the user out.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import logging
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

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


def tracked_by_git(path: str | os.PathLike) -> bool:
    """True when git tracks ``path`` (so `git checkout -- path` can restore it); False for git-ignored or
    untracked files (scratch sets, staging folders, runs outside a checkout) and where git is absent."""
    path = Path(path).absolute()
    folder = next((p for p in path.parents if p.is_dir()), None)
    if folder is None:
        return False
    try:
        found = subprocess.run(["git", "-C", str(folder), "ls-files", "--error-unmatch", "--", str(path)],
                               capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return found.returncode == 0


def resume_command(run_dir: str | os.PathLike, *flags: str) -> str:
    return " ".join(["micronet train --resume", shlex.quote(str(run_dir)), *flags])


# ---------------------------------------------------------------------- folder and lock
#: How to choose another folder for runs, valid for every command that trains (train, sweep, reproduce).
RUNS_FOLDER_FIX = ("choose a writable folder: `micronet train --runs-dir DIR`, or `--results DIR` of `micronet sweep` / "
                   "`micronet reproduce` (or $MICRONET_RUNS)")


def make_run_dir(run_dir: str | os.PathLike, *, fix: str = RUNS_FOLDER_FIX, kind: str = "run folder") -> Path:
    """Create ``run_dir`` (and parents); a path through a file or an unwritable place is one clear error
    ending in ``fix`` (how to name another folder)."""
    if str(run_dir).strip() in ("", "."):
        raise RunStoreError(f"the {kind} is empty; {fix}")
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise RunStoreError(f"cannot create {kind} {run_dir}: it is a file; {fix}") from None
    except NotADirectoryError:
        raise RunStoreError(f"cannot create {kind} {run_dir}: a part of that path is a file, not a folder; {fix}") from None
    except OSError as exc:
        raise RunStoreError(f"cannot create {kind} {run_dir} ({exc.strerror}); {fix}") from None
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise RunStoreError(f"{kind} {run_dir} is not writable; {fix}")
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
def lock(run_dir: str | os.PathLike, *, wait: bool = True, timeout: float | None = None,
         what: str | None = None, busy: str = "wait for it with --wait, or stop that process first",
         fix: str = RUNS_FOLDER_FIX, remove_empty: bool = True) -> Iterator[Path]:
    """Hold the run folder exclusively (a ``filelock.FileLock`` on ``<run_dir>/.lock``).

    ``wait=False``: if another process holds it, raise :class:`RunLockedError` naming the holder (pid,
    host, start time). ``wait=True``: log who holds it and wait (at most ``timeout`` seconds, None =
    as long as it takes). The OS releases the lock of a process that dies, so a killed holder never
    blocks anyone; its leftover ``.lock.json`` is reported as a stale lock and replaced. On entry,
    stale hidden temp files of killed writers are removed. A folder this call created and that holds
    nothing but the lock afterwards (setup failed before training) is removed again.

    ``what`` names the thing locked in messages (default ``run <run_dir>``; a results set's lock lives in a
    folder beside the set and names the set), ``busy`` says what to do when it is held, ``fix`` how to
    choose another folder when ``run_dir`` cannot be created; ``remove_empty=False`` keeps a folder that
    exists only for the lock (a results set's: removing it under a waiter would let two processes hold it). A ``.lock`` the OS cannot lock through (a symlink, a folder)
    is one error saying to delete it: no live lock is held through such a file.
    """
    run_dir = Path(run_dir)
    what = what or f"run {run_dir}"
    created = remove_empty and not run_dir.exists()
    make = functools.partial(make_run_dir, run_dir, fix=fix, kind="run folder" if what.startswith("run ") else "lock folder")
    make()
    flock = filelock.FileLock(str(run_dir / LOCK))
    try:
        _acquire(flock, run_dir, 0, make)
    except filelock.Timeout:
        holder = _describe(_read_holder(run_dir))
        if not wait:
            raise RunLockedError(f"{what} is in use by {holder}; {busy}") from None
        log.warning("%s is in use by %s; waiting for it to finish (Ctrl-C to stop waiting)", what, holder)
        try:
            _acquire(flock, run_dir, -1 if timeout is None else timeout, make)
        except filelock.Timeout:
            raise RunLockedError(f"{what} is still in use by {holder} after {timeout:g} s; try again later "
                                 "or stop that process") from None
    try:
        stale = _read_holder(run_dir)
        if stale is not None:
            dead = stale.get("host") == socket.gethostname() and isinstance(stale.get("pid"), int) and not _alive(stale["pid"])
            log.warning("broke the stale lock of run %s: %s %s", run_dir, _describe(stale),
                        "is no longer running" if dead else "no longer holds it")
        try:
            atomic_write_bytes(run_dir / HOLDER, json.dumps(_holder_record()).encode())
        except OSError as exc:
            raise RunStoreError(f"cannot write {run_dir / HOLDER} ({exc.strerror}); free space on that disk, or "
                                f"{fix}") from None
        clean_stale_temps(run_dir)
        yield run_dir
    finally:
        (run_dir / HOLDER).unlink(missing_ok=True)
        flock.release()
        if created and {p.name for p in run_dir.iterdir()} <= {LOCK}:
            (run_dir / LOCK).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                run_dir.rmdir()


def _acquire(flock: filelock.FileLock, run_dir: Path, timeout: float, make: Callable[[], Path]) -> None:
    """``flock.acquire``; an OS error on the lock file itself (ELOOP for a symlink, EISDIR, ...) is one line.
    A folder its holder removed on release (it held nothing but the lock) is made again (``make``)."""
    for attempt in range(10):
        try:
            flock.acquire(timeout=timeout)
            return
        except filelock.Timeout:  # an OSError (TimeoutError) too: held by another process, the caller's case
            raise
        except FileNotFoundError:
            if attempt < 9:
                make()
                continue
            exc = sys.exc_info()[1]
        except OSError as error:
            exc = error
        path = run_dir / LOCK
        kind = "a symlink" if path.is_symlink() else "a folder" if path.is_dir() else "not a lock file"
        raise RunStoreError(f"cannot lock {path}: it is {kind} ({exc.strerror or exc}); delete it (`rm -r "
                            f"{shlex.quote(str(path))}`: no process holds a lock through it) and run the command again") from None


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
