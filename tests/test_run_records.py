"""micronet_lib.report.run_records: what a report needs from a checkpoint is kept in the run's record, so a
committed set (no checkpoints) re-renders on a fresh clone (issue #11, issue #18's last row)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from micronet_lib.report import run_records
from micronet_lib.models import build_model


def _run(tmp_path, name="abc", with_checkpoint=True):
    run_dir = tmp_path / name
    run_dir.mkdir()
    if with_checkpoint:
        net = build_model("micronet_v2", width_mult=0.25, num_classes=10)
        torch.save({"format": 1, "model": net.state_dict(), "arch": {"name": "micronet_v2",
                    "options": {"width_mult": 0.25, "num_classes": 10}}}, run_dir / "best.pt")
    return {"run_id": name, "run_dir": str(run_dir)}


def test_derived_value_is_kept_and_read_back_without_the_checkpoint(tmp_path):
    summary = _run(tmp_path, with_checkpoint=False)
    (tmp_path / "abc" / "best.pt").write_bytes(b"weights")
    calls = []

    def compute(path):
        calls.append(path.name)
        return {"n": len(path.read_bytes())}

    assert run_records.derived(summary, "size", compute, key={"k": 1}) == {"n": 7}
    (tmp_path / "abc" / "best.pt").unlink()  # a fresh clone: no checkpoint
    assert run_records.derived(summary, "size", compute, key={"k": 1}) == {"n": 7} and calls == ["best.pt"]
    stored = json.loads((tmp_path / "abc" / "derived" / "size.json").read_text())
    assert stored == {"key": {"k": 1}, "value": {"n": 7}}
    with pytest.raises(run_records.CheckpointAbsent, match=r"run abc: .*best.pt is not here .* no 'size' for \{'k': 2\}"):
        run_records.derived(summary, "size", compute, key={"k": 2})  # other inputs: not the stored value


def test_run_scores_from_checkpoint_then_record_and_a_note_when_neither(tmp_path, monkeypatch):
    notes = []
    monkeypatch.setattr("micronet_lib.report.run_records.note", notes.append)
    with_ckpt, without = _run(tmp_path, "r1"), _run(tmp_path, "r2", with_checkpoint=False)
    first = run_records.run_scores([with_ckpt, without])
    assert first[0]["score"] > 0 and first[1] is None
    assert len(notes) == 1 and "run(s) r2" in notes[0] and "checkpoints are not committed" in notes[0]
    (tmp_path / "r1" / "best.pt").unlink()
    assert run_records.run_scores([with_ckpt])[0]["score"] == first[0]["score"]  # from the record


def test_run_table_round_trips_a_frame_or_notes_its_absence(tmp_path, monkeypatch):
    notes = []
    monkeypatch.setattr("micronet_lib.report.run_records.note", notes.append)
    summary = _run(tmp_path, with_checkpoint=False)
    (tmp_path / "abc" / "best.pt").write_bytes(b"x")
    frame = pd.DataFrame({"top1": [50.0, 41.5], "rate": [0.0, 30.0]})  # columns not in sorted order
    got = run_records.run_table(summary, "curve", lambda p: frame, key={"rates": [0, 30]}, what="The curve")
    pd.testing.assert_frame_equal(got, frame)
    # read back from the record (no computing): the same table, columns in the computed order
    again = run_records.run_table(summary, "curve", lambda p: 1 / 0, key={"rates": [0, 30]}, what="The curve")
    pd.testing.assert_frame_equal(again, frame)
    assert run_records.run_table(summary, "curve", lambda p: frame, key={"rates": [0, 60]}, what="The curve") is not None
    (tmp_path / "abc" / "best.pt").unlink()
    assert run_records.run_table(summary, "curve", lambda p: frame, key={"rates": [0, 90]}, what="The curve") is None
    assert notes and notes[0].startswith("The curve of run(s) abc")
