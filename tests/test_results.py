"""micronet_lib.results: tables and figures with captions, sidecars, atomic and byte-stable writes."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from micronet_lib import results  # noqa: E402

META = dict(profile="smoke", data="synthetic (smoke)")
# SCORING.md §7.3: the two released submissions, a realistic table to round-trip.
SCORES = pd.DataFrame(
    {"checkpoint": ["v1_pr_60", "v2_pr_60"], "params_s": [108108.75, 112858.5], "score": [0.0054454, 0.0056215]}
)


def _figure():
    results.apply_style()
    fig, ax = plt.subplots()
    ax.plot([0, 15, 30, 45, 60], [0.0124, 0.0110, 0.0093, 0.0075, 0.0056], marker="o", label="ver2")
    ax.set_xlabel("sparsity (%)")
    ax.legend()
    return fig


def _snapshot(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_table_files_caption_and_sidecar(tmp_path):
    paths = results.save_table(SCORES, "scores", meta=META, title="Released checkpoints", root=tmp_path)
    assert paths["csv"] == tmp_path / "tables" / "scores.csv"
    back = pd.read_csv(paths["csv"])
    pd.testing.assert_frame_equal(back, SCORES)  # no spurious RangeIndex column
    md = paths["md"].read_text()
    assert "profile: smoke" in md and "data: synthetic (smoke)" in md
    assert "| v1_pr_60" in md and "0.0054454" in md
    side = json.loads(paths["meta"].read_text())
    assert side["profile"] == "smoke" and side["data"] == "synthetic (smoke)"
    assert side["library_version"] and side["files"] == ["scores.csv", "scores.md"]
    assert "time" not in json.dumps(side).lower()  # no timestamps: reruns diff cleanly


def test_rerun_is_byte_identical_and_leaves_no_temp_files(tmp_path):
    def write():
        results.save_table(SCORES, "scores", meta=META, root=tmp_path)
        fig = _figure()
        results.save_figure(fig, "chain", meta=META, title="Score vs sparsity", root=tmp_path)
        plt.close(fig)
        return _snapshot(tmp_path)

    first, second = write(), write()
    assert first == second
    assert set(first) == {
        "tables/scores.csv", "tables/scores.md", "tables/scores.meta.json",
        "figures/chain.png", "figures/chain.svg", "figures/chain.meta.json",
    }
    svg = first["figures/chain.svg"].decode()
    assert "<dc:date>" not in svg
    assert first["figures/chain.png"][:8] == b"\x89PNG\r\n\x1a\n"


def test_failed_figure_write_keeps_previous_file(tmp_path, monkeypatch):
    fig = _figure()
    results.save_figure(fig, "chain", meta=META, root=tmp_path)
    before = _snapshot(tmp_path)

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(fig, "savefig", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        results.save_figure(fig, "chain", meta=META, root=tmp_path)
    plt.close(fig)
    assert _snapshot(tmp_path) == before  # old files intact, no temp leftovers


def test_env_var_sets_the_output_root(tmp_path, monkeypatch):
    monkeypatch.setenv(results.RESULTS_ENV, str(tmp_path / "elsewhere"))
    results.save_table(SCORES, "scores", meta=META)
    assert (tmp_path / "elsewhere" / "tables" / "scores.md").is_file()


@pytest.mark.parametrize(
    "meta, match",
    [({"profile": "smoke"}, "data"), ({"profile": "", "data": "x"}, "profile"), ("smoke", "dict")],
)
def test_meta_must_name_profile_and_data(tmp_path, meta, match):
    with pytest.raises(ValueError, match=match):
        results.save_table(SCORES, "scores", meta=meta, root=tmp_path)
    assert not (tmp_path / "tables").exists()  # rejected before anything is written


@pytest.mark.parametrize("name", ["../escape", "a/b", "", "x.meta"])
def test_bad_names_are_rejected(tmp_path, name):
    with pytest.raises(ValueError, match="name"):
        results.save_table(SCORES, name, meta=META, root=tmp_path)


def test_caption_names_profile_and_data():
    assert results.caption(META, "Title") == "Title — profile: smoke · data: synthetic (smoke)"
