"""micronet_lib.report.results: tables and figures with captions, sidecars, atomic and byte-stable writes."""

from __future__ import annotations

import json
import os

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from micronet_lib.report import results  # noqa: E402

META = dict(profile="smoke", data="synthetic (smoke)")
# docs/scoring.md §7.3: the two released submissions, a realistic table to round-trip.
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


# ------------------------------------------------------------------ formatting for reading (issue #11, item 5)


def test_format_table_reads_like_a_report():
    from micronet_lib.report.formatting import MISSING, format_table

    df = pd.DataFrame({
        "checkpoint": ["micronet_v1_pr_60", "micronet_v2_pr_60"],
        "params": [116544.0, 1165440.0],            # integer counts stored as floats
        "adds": [1.16544e05, float("nan")],         # scientific notation in, NaN in
        "score": [0.005445412345, 0.0056215],
        "best_test_top1": [26.6, 31.5625],
        "seconds": [123.456, None],
        "n": [3, 1],
    }).set_index(pd.RangeIndex(10, 12))             # a meaningless index must not show
    out = format_table(df)
    assert list(out.columns) == ["checkpoint", "params", "adds", "score", "best_test_top1 (%)", "seconds (s)", "n"]
    assert out["params"].tolist() == ["116,544", "1,165,440"]
    assert out["adds"].tolist() == ["116,544", MISSING]
    assert out["score"].tolist() == ["0.0054454", "0.0056215"]  # fixed significant digits per quantity
    assert out["best_test_top1 (%)"].tolist() == ["26.60", "31.56"]
    assert out["seconds (s)"].tolist() == ["123.5", MISSING]
    assert out["n"].tolist() == ["3", "1"]
    assert "e+" not in out.to_string() and ".0 " not in out.to_string() + " "


def test_named_index_becomes_a_column_and_units_are_not_doubled():
    from micronet_lib.report.formatting import format_table

    df = pd.DataFrame({"top-1 (%)": [80.07]}, index=pd.Index(["v1"], name="model"))
    assert list(format_table(df).columns) == ["model", "top-1 (%)"]


def test_table_html_has_no_index_scrolls_and_collapses_long_tables():
    from micronet_lib.report.formatting import LONG_TABLE_ROWS, table_html

    short = table_html(SCORES, csv_href="../tables/scores.csv")
    assert "overflow-x:auto" in short and "<details>" not in short and 'href="../tables/scores.csv"' in short
    assert "<th></th>" not in short and ">0<" not in short  # no index column
    long = pd.DataFrame({"run": [f"r{i}" for i in range(LONG_TABLE_ROWS + 1)], "score": 0.01})
    html = table_html(long, csv_href="../tables/long.csv")
    assert html.startswith("<details><summary>") and f"{LONG_TABLE_ROWS + 1} rows" in html
    assert 'href="../tables/long.csv"' in html.split("</summary>")[0]  # the link is visible while collapsed


def test_markdown_table_is_formatted_and_csv_keeps_raw_values(tmp_path):
    df = pd.DataFrame({"params": [116544.0], "top1": [float("nan")], "score": [0.0054454123]})
    paths = results.save_table(df, "fmt", meta=META, root=tmp_path)
    md = paths["md"].read_text()
    assert "116,544" in md and "—" in md and "0.0054454 " in md and "top1 (%)" in md and "1.16544e" not in md
    assert pd.read_csv(paths["csv"])["score"].iloc[0] == 0.0054454123


def test_legend_outside_keeps_the_data_clear():
    from micronet_lib.report.formatting import legend_outside

    fig = _figure()
    ax = fig.axes[0]
    for where in ("right", "below"):
        legend = legend_outside(ax, where=where)
        fig.canvas.draw()
        box, axes_box = legend.get_window_extent(), ax.get_window_extent()
        assert box.x0 >= axes_box.x1 if where == "right" else box.y1 <= axes_box.y0
    with pytest.raises(ValueError, match="allowed: 'right', 'below'"):
        legend_outside(ax, where="inside")
    plt.close(fig)


def test_announce_names_the_scratch_set_and_routes_writes_there(monkeypatch):
    from micronet_lib.report import results_sets

    for var in ("MICRONET_RESULTS", "MICRONET_RUNS", "MICRONET_RESULTS_KIND", "MICRONET_RESULTS_DEST"):
        monkeypatch.delenv(var, raising=False)
    info = results.announce({"profile": "smoke", "data": "synthetic"})
    scratch = results_sets.results_set("smoke", "synthetic").folder
    assert info.folder == scratch and results.results_root() == scratch
    assert info.shown == "results/scratch/smoke-synthetic" and "profile **smoke**" in info.line
    assert os.environ["MICRONET_RUNS"] == str(scratch / "runs")
    # the same kernel, other parameters: outputs follow them (the first call's choice is not sticky)
    again = results.announce({"profile": "cpu", "data": "imagefolder:x/cifar10-jpeg"})
    assert again.shown == "results/scratch/cpu-cifar10-jpeg" and os.environ["MICRONET_RUNS"].endswith("cpu-cifar10-jpeg/runs")
    # under `micronet reproduce` the environment names the set being built
    monkeypatch.setenv("MICRONET_RESULTS", "/tmp/staging/x")
    monkeypatch.setenv("MICRONET_RESULTS_DEST", "results/cpu-cifar10-jpeg")
    monkeypatch.setenv("MICRONET_RESULTS_KIND", "committed")
    built = results.announce({"profile": "cpu", "data": "imagefolder:x/cifar10-jpeg"})
    assert built.shown == "results/cpu-cifar10-jpeg" and built.kind == "committed" and str(built.folder) == "/tmp/staging/x"
