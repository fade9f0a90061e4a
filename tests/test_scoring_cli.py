"""``micronet score``: summary/JSON output and errors (SCORING.md §7.3 values)."""

import json

import pytest

from micronet_lib.cli import main


def test_score_checkpoint_json(asset, capsys):
    path = asset("micronet_v1_pr_60.t7")
    assert main(["score", "--checkpoint", str(path), "--json", "--per-layer"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["summary"]["params_s"] == 108_108.75
    assert out["summary"]["score"] == pytest.approx(0.0054454, abs=5e-8)
    assert out["table"][0]["path"] == "conv1"


def test_score_model_official_no_freebie(capsys):
    assert main(["score", "--model", "micronet_v1", "--convention", "official", "--no-freebie"]) == 0
    text = capsys.readouterr().out
    # dense ver1 at fp32, official: adds 38,389,046 + mults 40,776,544 (SCORING §7.3, freebie off)
    assert "79,165,590.00" in text and "freebie off" in text


def test_score_bad_convention(capsys):
    assert main(["score", "--model", "micronet_v1", "--convention", "nope"]) == 2
    assert "allowed: kaist, official" in capsys.readouterr().err
