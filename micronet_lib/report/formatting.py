"""Tables and figures for reading (issue #11, item 5): one formatter, applied by ``results.publish``.

A table is shown (HTML report, Markdown file) with

- integers with thousands separators (``116,544``, never ``1.165440e+05`` or ``116544.0``),
- a fixed number of significant digits or decimals per quantity (``QUANTITIES``: accuracies in % with
  2 decimals, scores and score terms with 4 significant digits, counts as integers, ...),
- no index column, "—" where a value is missing (NaN / None),
- the unit in the header (``best_test_top1 (%)``, ``seconds (s)``),
- the page width respected: the table scrolls sideways inside its own box rather than being cut, and a
  long table is collapsed into ``<details>`` with a link to its CSV.

The CSV keeps the raw numbers. ``legend_outside`` puts a figure's legend beside or below the axes, off
the data.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["Quantity", "QUANTITIES", "quantity_of", "format_value", "format_table", "table_markdown", "table_html",
           "legend_outside", "MISSING", "LONG_TABLE_ROWS"]

MISSING = "—"
LONG_TABLE_ROWS = 25  # longer tables are collapsed into <details> in the HTML report
# Compact cells so a 13-column score table fits a 1,280 px page; wider tables scroll inside their box.
_TABLE_STYLE = ("<style>.micronet-table{font-size:0.85em}"
                ".micronet-table th,.micronet-table td{padding:0.25em 0.45em;white-space:nowrap}"
                ".micronet-table th{white-space:normal;vertical-align:bottom}</style>")


@dataclass(frozen=True)
class Quantity:
    """How a kind of column is written: ``style`` "fixed" (``digits`` decimals), "sig" (``digits``
    significant digits) or "count" (an integer with separators; up to two decimals if not whole); ``unit`` goes
    into the header."""

    pattern: str
    style: str
    digits: int
    unit: str | None = None


# First match wins; matched against the lower-cased column name.
QUANTITIES: tuple[Quantity, ...] = (
    Quantity(r"(top1|top5|top-1|top-5|accuracy)(?!.*(std|_n$))", "fixed", 2, "%"),
    Quantity(r"(top1|top5|top-1|top-5|accuracy).*std", "fixed", 2, "%"),
    Quantity(r"(^|_)(seconds|wall_seconds)$", "fixed", 1, "s"),
    Quantity(r"score|_term$|leaderboard|pre_review", "sig", 5),  # 0.0054454: the digits docs/scoring.md gives
    Quantity(r"(^|_)(params|mults|adds|ops|mask_bits|params_s|ops_s|images|epochs|n|seed|step|steps)$", "count", 0),
    Quantity(r"sparsity|rate", "sig", 4),
    Quantity(r"loss|coef|norm|ortho|ratio", "sig", 4),
)
_DEFAULT = Quantity("", "sig", 4)
_UNIT_IN_NAME = re.compile(r"\((%|s|[^)]*)\)\s*$")


def quantity_of(column: Any) -> Quantity:
    name = str(column).lower()
    return next((q for q in QUANTITIES if re.search(q.pattern, name)), _DEFAULT)


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        import pandas as pd

        return bool(pd.isna(value)) if not isinstance(value, (list, tuple, dict)) else False
    except (TypeError, ValueError):
        return False


def format_value(value: Any, quantity: Quantity = _DEFAULT) -> str:
    """One cell as text: see the module docstring. Non-numbers pass through (``str``)."""
    import numpy as np

    if _missing(value):
        return MISSING
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if not isinstance(value, (float, np.floating)):
        return str(value)
    value = float(value)
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    if quantity.style == "fixed":
        return f"{value:,.{quantity.digits}f}"
    if quantity.style == "count" or (value.is_integer() and abs(value) >= 1):
        # Whole counts as integers; halves and quarters (16-bit "freebie" counts) keep their digits.
        return f"{value:,.0f}" if value.is_integer() else f"{value:,.2f}".rstrip("0").rstrip(".")
    if value == 0:
        return "0"
    text = f"{value:.{quantity.digits}g}"
    if "e" in text and 1e-4 <= abs(value) < 1e15:  # 'g' switches to exponents too early for readers
        decimals = max(0, quantity.digits - 1 - math.floor(math.log10(abs(value))))
        text = f"{value:,.{decimals}f}"
    elif "e" not in text and abs(value) >= 1000:
        text = f"{float(text):,.{max(0, len(text.split('.')[1]) if '.' in text else 0)}f}"
    return text


def _header(column: Any, quantity: Quantity) -> str:
    name = str(column)
    if quantity.unit and not _UNIT_IN_NAME.search(name) and not name.endswith("%"):
        return f"{name} ({quantity.unit})"
    return name


def format_table(df) -> "pd.DataFrame":
    """``df`` as strings for reading: per-quantity digits, separators, "—" for missing, units in headers,
    the index folded into columns when it carries information (named or not a plain range)."""
    import pandas as pd

    if not (isinstance(df.index, pd.RangeIndex) and df.index.name is None):
        df = df.reset_index()
    out = {}
    for column in df.columns:
        quantity = quantity_of(column)
        out[_header(column, quantity)] = [format_value(v, quantity) for v in df[column]]
    return pd.DataFrame(out, columns=list(out))


def table_markdown(df) -> str:
    """The formatted table as Markdown, numbers right-aligned, no index."""
    import pandas as pd

    shown = format_table(df)
    source = df if isinstance(df.index, pd.RangeIndex) and df.index.name is None else df.reset_index()
    align = ["right" if source[c].dtype.kind in "iuf" else "left" for c in source.columns]
    return shown.to_markdown(index=False, disable_numparse=True, colalign=align)


def table_html(df, *, csv_href: str | None = None, max_rows: int = LONG_TABLE_ROWS) -> str:
    """The formatted table as HTML without an index, in a box that scrolls sideways rather than being cut;
    a table longer than ``max_rows`` is collapsed into ``<details>`` whose summary links to the CSV."""
    shown = format_table(df)
    body = shown.to_html(index=False, escape=True, border=0, classes="micronet-table", na_rep=MISSING)
    # Headers may wrap after '_' (snake_case names are the widest cells of a numeric table).
    body = re.sub(r"<th>([^<]*)</th>", lambda m: "<th>" + m.group(1).replace("_", "_<wbr>") + "</th>", body)
    box = f'<div style="overflow-x:auto; max-width:100%">{_TABLE_STYLE}{body}</div>'
    link = f' · <a href="{html.escape(csv_href)}">CSV</a>' if csv_href else ""
    if len(shown) > max_rows:
        return (f"<details><summary>{len(shown):,} rows — click to show the table{link}</summary>{box}</details>")
    return box + (f'<p style="font-size:smaller">{link[3:]}</p>' if link else "")


def legend_outside(ax, *, where: str = "right", **kwargs):
    """Put ``ax``'s legend outside the data: to the right of the axes (``where="right"``) or below them
    (``"below"``, in columns). The saved figure grows to hold it (``bbox_inches="tight"``)."""
    if where == "right":
        placement = dict(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    elif where == "below":
        handles = len(ax.get_legend_handles_labels()[0])
        placement = dict(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=min(3, max(1, handles)),
                         borderaxespad=0.0)
    else:
        raise ValueError(f"legend_outside(where={where!r}); allowed: 'right', 'below'")
    return ax.legend(**{**placement, **kwargs})
