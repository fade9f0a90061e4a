"""The notebooks' shared first step and helpers (micronet_lib.report.notebook, issue #30)."""

from __future__ import annotations

import logging

import torch

from micronet_lib.assets import AssetUnavailableError
from micronet_lib.report import notebook


def test_prologue_sets_threads_and_quiets_the_library(monkeypatch):
    before = torch.get_num_threads()
    logger = logging.getLogger("micronet_lib")
    level = logger.level
    try:
        notebook.prologue(1)
        assert torch.get_num_threads() == 1 and logger.level == logging.ERROR
        notebook.prologue(0)  # 0 keeps what torch has
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
        logger.setLevel(level)


def test_released_models_loads_what_is_here_and_notes_the_rest(monkeypatch):
    notes = []

    def fake_load(name):
        if name == "absent":
            raise AssetUnavailableError("absent is not here")
        return f"model {name}"

    monkeypatch.setattr(notebook, "load_released", fake_load)
    monkeypatch.setattr(notebook.results, "note", notes.append)
    assert notebook.released_models(["micronet_v1_pr_60", "absent"]) == {"micronet_v1_pr_60": "model micronet_v1_pr_60"}
    assert len(notes) == 1 and "absent" in notes[0] and "micronet_v1_pr_60" not in notes[0]
    assert notebook.released_models(["micronet_v1_pr_60"]) and len(notes) == 1  # nothing missing: no note
