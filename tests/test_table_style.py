"""One table style everywhere (issue #32): one precision per column, no tuple headers, units in headers,
text columns left-aligned and wrapping, and no per-call ``floatfmt`` that is silently ignored."""

from __future__ import annotations

import inspect
import re

import nbformat
import pandas as pd
import pytest

from micronet_lib.report import results
from micronet_lib.pipeline import list_notebooks
from micronet_lib.report.formatting import format_table, table_html, table_markdown


def test_one_precision_per_column():
    df = pd.DataFrame({"params_s": [108108.75, 218874.5, 183536.0], "score": [0.0054454, 0.0056215, 0.01],
                       "loss": [0.5033, 30.53, None], "Δ vs CE (points)": [None, -0.2, -4.6667]})
    shown = format_table(df)
    assert shown["params_s"].tolist() == ["108,108.75", "218,874.50", "183,536.00"]
    assert shown["score"].tolist() == ["0.0054454", "0.0056215", "0.0100000"]
    assert shown["loss"].tolist() == ["0.5033", "30.5300", "—"]
    assert shown["Δ vs CE (points)"].tolist() == ["—", "-0.20", "-4.67"]
    for column in shown:  # every number of a column has the same number of decimals
        decimals = {len(v.split(".")[1]) if "." in v else 0 for v in shown[column] if v != "—"}
        assert len(decimals) == 1, (column, shown[column].tolist())


def test_a_quantity_is_shown_in_percent_everywhere():
    shown = format_table(pd.DataFrame({"rate": [15, 60], "global_sparsity": [0.15, 0.6000001], "std (%)": [1.3317, 0.3464]}))
    assert shown["global_sparsity (%)"].tolist() == ["15.00", "60.00"]  # a fraction in the CSV, percent to read
    assert shown["std (%)"].tolist() == ["1.33", "0.35"]


def test_tuple_headers_are_flattened_and_units_added():
    df = pd.concat({"v1": pd.DataFrame({"params": [1, 2]}), "v2": pd.DataFrame({"params": [3, 4]})}, axis=1)
    shown = format_table(df)
    assert list(shown.columns) == ["v1 params", "v2 params"]
    assert "('v1'" not in table_markdown(df) and "('v1'" not in table_html(df)
    assert list(format_table(pd.DataFrame({"best_test_top1": [30.5]})).columns) == ["best_test_top1 (%)"]


def test_text_columns_left_aligned_and_wrapping_numbers_right():
    df = pd.DataFrame({"field": ["precision"], "reason": ["a long reason " * 10], "n": [3]})
    html = table_html(df)
    cells = re.findall(r"<td[^>]*>", html)
    assert cells == ['<td class="t">', '<td class="t">', "<td>"]
    assert re.findall(r"<th(?: [^>]*)?>", html) == ['<th class="t">', '<th class="t">', "<th>"]  # headers above their cells
    assert "td.t,.micronet-table th.t{text-align:left}" in html and "td.t{white-space:normal;overflow-wrap:break-word" in html
    url = table_html(pd.DataFrame({"url": ["https://raw.githubusercontent.com/owner/repository/commit/file.t7"]}))
    assert '<td class="t u">' in url and "td.u{overflow-wrap:anywhere}" in url  # a URL may break anywhere
    assert table_markdown(df).splitlines()[1].startswith("|:") and table_markdown(df).splitlines()[1].endswith(":|")


def test_no_floatfmt_left():
    assert "floatfmt" not in inspect.signature(results.save_table).parameters
    with pytest.raises(TypeError):
        results.save_table(pd.DataFrame({"a": [1]}), "x", meta=dict(profile="p", data="d"), floatfmt=".2f")
    for path in list_notebooks():
        sources = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells)
        assert "floatfmt" not in sources, path.name
