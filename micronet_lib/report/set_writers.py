"""Who may write a results set, and what a failed write says (issue #34).

- :func:`set_lock`: one lock per set (the run store's lock, ``runstore.folder.lock``, on
  ``<base>/.staging/<set>.lock/``), held by ``micronet reproduce``, ``micronet sweep`` and a notebook
  writing its scratch set (:func:`hold_for_process`); a second writer waits (``--wait``) or stops with
  the holder named (pid, host, start), as ``micronet train`` does for one run.
- :func:`storage_errors`: a full or read-only disk, or a file where the set's folder should be, is one
  :class:`SetStorageError` line naming the path and the way out, not an ``OSError`` traceback.
"""

from __future__ import annotations

import contextlib
import errno
from pathlib import Path
from typing import Any, ContextManager, Iterator

from micronet_lib.report.results_sets import ResultsSet, relative_to_repo
from micronet_lib.runstore.folder import lock

__all__ = ["SetStorageError", "set_lock", "hold_for_process", "storage_errors"]


class SetStorageError(ValueError):
    """The set's folder cannot be written (a file in the way, a read-only or full disk): one line, the way out."""


def _check_base(target: ResultsSet) -> None:
    """The folder holding the sets must be a folder (``--results`` naming a file is one line, before any work)."""
    for parent in (target.folder.parent, *target.folder.parent.parents):
        if parent.exists():
            if not parent.is_dir():
                raise SetStorageError(f"cannot write the results set {target.folder}: {parent} is a file, not a "
                                      "folder; pass --results DIR naming a folder (default: the repository's results/)")
            return


def set_lock(target: ResultsSet, *, wait: bool = False,
             busy: str = "wait for it with --wait, or stop that process first") -> ContextManager[Path]:
    """Hold ``target`` exclusively: the run store's lock (``train.store.lock``) on ``<base>/.staging/<set>.lock/``.

    Held by ``micronet reproduce``, ``micronet sweep`` and a notebook writing its scratch set, so two writers
    never build, swap or train into one set at once: the second waits (``wait``) or stops with the holder
    named (pid, host, start).
    """

    _check_base(target)
    return lock(target.lock_folder, wait=wait, what=f"results set {relative_to_repo(target.folder)}", busy=busy,
                fix="pass --results DIR naming a writable folder", remove_empty=False)


_HELD: dict[str, Any] = {}


def hold_for_process(target: ResultsSet) -> None:
    """Hold ``target``'s lock until this process ends (a notebook kernel writing its scratch set); a lock held
    for another set is released first. Another holder is a ``RunLockedError`` naming it."""
    if _HELD.get("folder") == target.folder:
        return
    stack = contextlib.ExitStack()
    stack.enter_context(set_lock(target, busy="wait for it to finish (or stop it), then run this cell again"))
    if "stack" in _HELD:
        _HELD["stack"].close()
    _HELD.update(folder=target.folder, stack=stack)


_STORAGE_FIX = {errno.ENOSPC: "free space on that disk", errno.EDQUOT: "free space (disk quota)",
                errno.EROFS: "the disk is read-only", errno.EACCES: "it is not writable",
                errno.EPERM: "it is not writable", errno.ENOTDIR: "a part of the path is a file",
                errno.EEXIST: "a file is in the way"}


@contextlib.contextmanager
def storage_errors(target: ResultsSet) -> Iterator[None]:
    """Turn an OS error writing the set (staging, swap, executed notebooks) into one ``SetStorageError`` line."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _STORAGE_FIX:
            raise
        where = exc.filename or target.staging
        raise SetStorageError(
            f"cannot write {where} ({exc.strerror}: {_STORAGE_FIX[exc.errno]}) while building the results set "
            f"{relative_to_repo(target.folder)}, which is left as it was; "
            + ("free space, then run the command again (finished training runs are kept)" if exc.errno in
               (errno.ENOSPC, errno.EDQUOT) else "pass --results DIR naming a writable folder")) from None
