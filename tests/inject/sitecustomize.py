"""Fault injection for the subprocesses of tests/test_set_safety.py (put this folder first on PYTHONPATH).

No root tricks, nothing outside the test's own temp folders: the faults are raised in Python.

- ``MICRONET_TEST_NOTEBOOKS=DIR``: the pipeline's notebooks folder is DIR (tiny notebooks, a broken
  ``params/<profile>.yaml``) instead of the repository's ``notebooks/``.
- ``MICRONET_TEST_FAIL=ERRNO:TEXT`` (e.g. ``ENOSPC:execution.json.``): opening for writing, or creating a
  folder, at a path containing TEXT fails with that errno, as on a full (ENOSPC) or read-only (EROFS) disk.
"""

import builtins
import errno
import io
import os

_notebooks = os.environ.get("MICRONET_TEST_NOTEBOOKS")
if _notebooks:
    from pathlib import Path

    import micronet_lib.pipeline.run_notebooks as _execute
    import micronet_lib.pipeline.params as _params
    import micronet_lib.repo as _repo

    for _module in (_execute, _params, _repo):
        _module.notebooks_dir = lambda: Path(_notebooks)

_fail = os.environ.get("MICRONET_TEST_FAIL")
if _fail:
    _name, _, _needle = _fail.partition(":")
    _errno = getattr(errno, _name)
    _open, _mkdir = builtins.open, os.mkdir

    def _hit(path) -> bool:
        return isinstance(path, (str, os.PathLike)) and _needle in os.fspath(path)

    def _failing_open(file, mode="r", *args, **kwargs):
        if _hit(file) and any(c in mode for c in "wax+"):
            raise OSError(_errno, os.strerror(_errno), os.fspath(file))
        return _open(file, mode, *args, **kwargs)

    def _failing_mkdir(path, *args, **kwargs):
        if _hit(path):
            raise OSError(_errno, os.strerror(_errno), os.fspath(path))
        return _mkdir(path, *args, **kwargs)

    builtins.open = io.open = _failing_open
    os.mkdir = _failing_mkdir
