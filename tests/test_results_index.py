"""The landing page of a results set and the README's claims table generated from it (issue #32)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from micronet_lib.report.claims import ClaimBoard
from micronet_lib.report.index import (README_BEGIN, README_END, claim_rows, freshness, readme_block, readme_table,
                                        update_readme, write_index)
from micronet_lib.report.stats import paired_difference, verdict

REPO = Path(__file__).resolve().parents[1]


def _set(folder: Path, commit: str | None = "abc") -> Path:
    """A results set with one report (02) settling two claims through a ClaimBoard, as a notebook does."""
    (folder / "tables").mkdir(parents=True)
    (folder / "html").mkdir()
    (folder / "html" / "02_regularizers.html").write_text("<html></html>")
    board = ClaimBoard(["ortho_helps", "wls_beats_ls"])
    against = paired_difference({0: 30.0, 1: 28.0, 2: 31.0}, {0: 31.0, 1: 30.5, 2: 30.0})  # −0.83 points
    board.settle("ortho_helps", setup="3 seeds, 5 epochs", result="r1", verdict=verdict(against), effect=against)
    board.settle("wls_beats_ls", setup="—", result="—", verdict=verdict(paired_difference({0: 2.0}, {0: 1.0})))
    board.frame().to_csv(folder / "tables" / "02_claims.csv", index=False)
    manifest = {"set": folder.name, "commit": commit, "profile": "cpu", "data": "imagefolder:x", "seeds": [0, 1, 2],
                "budget": {"epochs": 5, "train_per_class": 120}, "notebooks": {"02_regularizers": {"wall_seconds": 60}}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_index_lists_every_claim_with_verdict_effect_design_and_link(tmp_path):
    folder = _set(tmp_path / "cpu-x")
    write_index(folder, repo=tmp_path)  # not a git checkout: the page says it cannot tell
    md, html = (folder / "index.md").read_text(), (folder / "index.html").read_text()
    assert "inconclusive, leaning against" in md and "inconclusive, leaning for" in md
    assert "−0.83 points, 95 % CI [" in md and "3 seeds" in md  # effect with interval, from the numbers
    assert "html/02_regularizers.html#claim-ortho_helps" in md and 'href="html/02_regularizers.html#claim-ortho_helps"' in html
    assert "| epochs per training run | 5 |" in md and "3 seeds, 5 epochs" in md  # budget and design
    assert "Could not tell whether this set is current" in md
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [c["verdict"] for c in manifest["claims"]] == ["inconclusive, leaning against", "inconclusive, leaning for"]


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_freshness_names_later_commits_that_touch_the_code(tmp_path):
    repo = tmp_path / "repo"
    (repo / "micronet_lib").mkdir(parents=True)
    (repo / "micronet_lib" / "a.py").write_text("x = 1\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "made the set")
    made = _git(repo, "rev-parse", "HEAD")
    (repo / "docs.txt").write_text("prose\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "docs only")
    assert freshness({"commit": made}, repo=repo).state == "current"
    (repo / "micronet_lib" / "a.py").write_text("x = 2\n")
    _git(repo, "commit", "-q", "-am", "BN re-estimation changed")
    fresh = freshness({"commit": made}, repo=repo)
    assert fresh.state == "stale" and len(fresh.later) == 1
    assert "BN re-estimation changed" in fresh.later[0] and "micronet_lib/a.py" in fresh.later[0]
    assert freshness({"commit": "0" * 40}, repo=repo).state == "unknown"  # not in this history


def test_readme_table_is_rewritten_only_for_the_set_it_names(tmp_path):
    folder = _set(tmp_path / "results" / "cpu-x")
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{README_BEGIN}\n<!-- generated from results/cpu-x/index.md -->\n{README_END}\nend\n")
    assert update_readme(readme, folder, claim_rows(folder))
    set_path, block = readme_block(readme.read_text())
    assert set_path == "results/cpu-x" and block == readme_table(claim_rows(folder), "results/cpu-x")
    other = _set(tmp_path / "results" / "smoke-y")
    assert not update_readme(readme, other, claim_rows(other))


def test_readme_claims_table_equals_the_committed_sets_landing_page():
    text = (REPO / "README.md").read_text()
    found = readme_block(text)
    assert found is not None, f"README.md has no {README_BEGIN} … {README_END} block"
    set_path, block = found
    assert set_path and (REPO / set_path / "manifest.json").is_file(), f"the block names no committed set: {set_path!r}"
    rows = claim_rows(REPO / set_path)
    assert block == readme_table(rows, set_path), "README claims table differs: run `micronet reproduce --index-only`"
    index = (REPO / set_path / "index.md")
    if index.is_file():  # the landing page lists the same claims and verdicts
        for row in rows:
            assert row.link in index.read_text() and f"**{row.verdict}**" in index.read_text()


def test_committed_landing_page_links_resolve_to_claim_boxes():
    """Every claim the committed set's landing page lists links to a box that exists in its report."""
    set_path, _ = readme_block((REPO / "README.md").read_text())
    folder = REPO / set_path
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["claims"], "the manifest carries the verdicts"
    for claim in manifest["claims"]:
        page, anchor = claim["link"].split("#")
        assert f'id="{anchor}"' in (folder / page).read_text(), claim["link"]
    html = (folder / "index.html").read_text()
    assert all(f'href="{c["link"]}"' in html for c in manifest["claims"])
    assert "consistent" not in json.dumps(manifest["claims"])  # verdict names carry the direction (issue #32)


def test_a_rerender_never_trains(tmp_path, monkeypatch):
    """``micronet reproduce --rerender`` sets MICRONET_NO_TRAINING: a run the records lack is an error, not trained."""
    from micronet_lib.train.config import TrainConfig
    from micronet_lib.train.engine import run_or_load
    from micronet_lib.train.runs import NO_TRAINING_ENV

    monkeypatch.setenv(NO_TRAINING_ENV, "1")
    with pytest.raises(RuntimeError, match="never trains"):
        run_or_load(TrainConfig(dataset="synthetic", profile="smoke"), runs_dir=tmp_path)
    assert not any(tmp_path.rglob("*.pt"))


def test_freshness_looks_at_this_repository_by_default():
    from micronet_lib.report import index

    assert (index._REPO / "pyproject.toml").is_file() and (index._REPO / "micronet_lib").is_dir()
    first = _git(REPO, "rev-list", "--max-parents=0", "HEAD").splitlines()[0]
    assert freshness({"commit": first}).state == "stale"  # every later commit touching the code is listed
