"""Opening and saving a notebook in JupyterLab leaves no diff (issue #32): the committed notebooks carry the
metadata Lab's save writes, and ``micronet lab`` puts it back for a kernel on another Python patch release."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest

from micronet_lib.pipeline import list_notebooks
from micronet_lib.pipeline.nbmeta import NOTEBOOK_METADATA, PRE_SAVE_HOOK, normalise, pre_save_hook

NOTEBOOKS = list_notebooks()


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 6


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_is_what_a_save_writes(path: Path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata["kernelspec"] == NOTEBOOK_METADATA["kernelspec"]
    assert nb.metadata["language_info"] == NOTEBOOK_METADATA["language_info"]
    assert all(cell.get("id") for cell in nb.cells)  # Lab adds ids to cells without one
    # jupyter_server writes nbformat.writes(nb) and a final newline: the committed bytes must be exactly that.
    assert path.read_text() == nbformat.writes(normalise(nb)) + "\n"


def test_language_info_is_what_the_kernel_reports():
    from ipykernel.ipkernel import IPythonKernel

    reported = dict(IPythonKernel.language_info)
    committed = dict(NOTEBOOK_METADATA["language_info"])
    reported.pop("version"), committed.pop("version")  # the patch release is put back by the save hook
    assert reported == committed


def _lab_save(root: Path, name: str, *, language_version: str, hook: bool) -> None:
    """What Lab does on open + autosave: GET the notebook, set the kernel's language_info, PUT it back."""
    from jupyter_server.services.contents.filemanager import FileContentsManager

    manager = FileContentsManager(root_dir=str(root), **({"pre_save_hook": PRE_SAVE_HOOK} if hook else {}))
    model = manager.get(name, content=True)
    from ipykernel.ipkernel import IPythonKernel

    model["content"]["metadata"]["language_info"] = dict(IPythonKernel.language_info, version=language_version)
    manager.save({"type": "notebook", "format": "json", "content": model["content"]}, name)


@pytest.mark.parametrize("path", NOTEBOOKS[:2], ids=lambda p: p.stem)
def test_lab_save_leaves_no_diff(tmp_path, path):
    shutil.copy(path, tmp_path / path.name)
    before = (tmp_path / path.name).read_bytes()
    _lab_save(tmp_path, path.name, language_version=NOTEBOOK_METADATA["language_info"]["version"], hook=False)
    assert (tmp_path / path.name).read_bytes() == before
    # A kernel on another patch release: `micronet lab`'s save hook keeps the committed metadata.
    _lab_save(tmp_path, path.name, language_version="3.11.99", hook=True)
    assert (tmp_path / path.name).read_bytes() == before
    _lab_save(tmp_path, path.name, language_version="3.11.99", hook=False)
    assert (tmp_path / path.name).read_bytes() != before  # the test can fail: without the hook it would diff


def test_micronet_lab_installs_the_hook():
    from micronet_lib.cli.lab import lab_command

    cmd = lab_command(notebooks="notebooks", port=8888, ip="127.0.0.1", token="x", browser=False)
    assert f"--ContentsManager.pre_save_hook={PRE_SAVE_HOOK}" in cmd
    pre_save_hook({"type": "file", "content": "x"})  # other files pass untouched
