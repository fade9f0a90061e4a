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

__all__ = ["Quantity", "QUANTITIES", "quantity_of", "format_value", "column_decimals", "column_name", "format_table",
           "table_markdown", "table_html",
           "legend_outside", "MISSING", "LONG_TABLE_ROWS"]

MISSING = "—"
LONG_TABLE_ROWS = 25  # longer tables are collapsed into <details> in the HTML report
# Compact cells so a 13-column score table fits a 1,280 px page; wider tables scroll inside their box.
_TABLE_STYLE = ("<style>.micronet-table{font-size:0.85em}"
                ".micronet-table th,.micronet-table td{padding:0.25em 0.45em;white-space:nowrap}"
                ".micronet-table th{white-space:normal;vertical-align:bottom}"
                ".micronet-table td.t,.micronet-table th.t{text-align:left}"
                ".micronet-table td.t{white-space:normal;overflow-wrap:break-word;min-width:6em;max-width:40em}"
                ".micronet-table td.u{overflow-wrap:anywhere}</style>")


@dataclass(frozen=True)
class Quantity:
    """How a kind of column is written: ``style`` "fixed" (``digits`` decimals), "sig" (``digits``
    significant digits) or "count" (an integer with separators; up to two decimals if not whole); ``unit`` goes
    into the header; ``scale`` multiplies the shown value (a sparsity stored as a fraction is shown in %, as
    every figure draws it; the CSV keeps the fraction)."""

    pattern: str
    style: str
    digits: int
    unit: str | None = None
    scale: float = 1.0


# First match wins; matched against the lower-cased column name.
QUANTITIES: tuple[Quantity, ...] = (
    Quantity(r"(top1|top5|top-1|top-5|accuracy)(?!.*(std|_n$))", "fixed", 2, "%"),
    Quantity(r"(top1|top5|top-1|top-5|accuracy).*std", "fixed", 2, "%"),
    Quantity(r"\(points\)|^δ", "fixed", 2),  # differences of accuracies, in percentage points
    Quantity(r"\(%\)$", "fixed", 2),  # any column already in percent (a mean, an interval end, an agreement)
    Quantity(r"sparsity", "fixed", 2, "%", 100.0),  # fractions in the records, percent for the reader
    Quantity(r"(^|_)(seconds|wall_seconds)$", "fixed", 1, "s"),
    Quantity(r"score|_term$|leaderboard|pre_review", "sig", 5),  # 0.0054454: the digits docs/scoring.md gives
    Quantity(r"(^|[_ ])(params|mults|adds|ops|mask_bits|params_s|ops_s|images|epochs|n|seed|seeds|step|steps)$", "count", 0),
    Quantity(r"rate", "sig", 4),
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


def column_decimals(values, quantity: Quantity) -> int | None:
    """One number of decimals for a whole column, so its cells line up (issue #32: not 218,874.5 beside
    108,108.75 beside 183,536): "fixed" columns keep their digits; "count" columns show 2 decimals when any
    value is fractional, else none; "sig" columns get enough decimals for ``digits`` significant digits of
    their smallest non-zero magnitude (capped at 8). ``None``: no number in the column."""
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
               and not _missing(v) and math.isfinite(float(v))]
    if not numbers:
        return None
    if quantity.style == "fixed":
        return quantity.digits
    fractional = any(not x.is_integer() for x in numbers)
    if quantity.style == "count" or not fractional:
        return 2 if fractional and quantity.style == "count" else 0
    # The smallest non-zero magnitude sets the decimals, so it keeps its significant digits (0.0054454 beside 0.01).
    smallest = min((abs(x) for x in numbers if x != 0), default=0.0)
    if smallest == 0:
        return 0
    return int(min(8, max(0, quantity.digits - 1 - math.floor(math.log10(smallest)))))


def column_name(column: Any) -> str:
    """A column name as text: a tuple from a pivot or a two-level header becomes ``"v1 params"``, never
    ``"('v1', 'params')"``."""
    if isinstance(column, tuple):
        return " ".join(str(part) for part in column if str(part) != "")
    return str(column)


def _header(column: Any, quantity: Quantity) -> str:
    name = str(column)
    if quantity.unit and not _UNIT_IN_NAME.search(name) and not name.endswith("%"):
        return f"{name} ({quantity.unit})"
    return name


def format_table(df) -> "pd.DataFrame":
    """``df`` as strings for reading: per-quantity digits, separators, "—" for missing, units in headers,
    the index folded into columns when it carries information (named or not a plain range)."""
    import pandas as pd

    import numpy as np

    if not (isinstance(df.index, pd.RangeIndex) and df.index.name is None):
        df = df.reset_index()
    out = {}
    for position, column in enumerate(df.columns):
        name = column_name(column)
        quantity = quantity_of(name)
        values = [v.item() if isinstance(v, np.generic) else v for v in df.iloc[:, position]]
        if quantity.scale != 1.0:
            values = [v * quantity.scale if isinstance(v, (int, float)) and not isinstance(v, bool) else v
                      for v in values]
        decimals = column_decimals(values, quantity)
        out[_header(name, quantity)] = [_cell(v, quantity, decimals) for v in values]
    return pd.DataFrame(out, columns=list(out))


def _cell(value: Any, quantity: Quantity, decimals: int | None) -> str:
    """A number with its column's decimals (ints stay ints in an all-integer column); others as ``format_value``."""
    if decimals is None or isinstance(value, bool) or not isinstance(value, (int, float)) or _missing(value):
        return format_value(value, quantity)
    if math.isinf(value):
        return format_value(value, quantity)
    return f"{value:,.{decimals}f}"


def table_markdown(df) -> str:
    """The formatted table as Markdown, numbers right-aligned, no index."""
    import pandas as pd

    shown = format_table(df)
    return shown.to_markdown(index=False, disable_numparse=True, colalign=_alignment(df))


def _alignment(df) -> list[str]:
    """"right" for number columns, "left" for text, in the formatted table's column order."""
    import pandas as pd

    source = df if isinstance(df.index, pd.RangeIndex) and df.index.name is None else df.reset_index()

    def numeric(values) -> bool:  # numbers with gaps (None, NaN) are still a number column
        present = [v for v in values if not _missing(v)]
        return bool(present) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present)

    return ["right" if source.iloc[:, i].dtype.kind in "iuf" or numeric(source.iloc[:, i].tolist()) else "left"
            for i in range(source.shape[1])]


def table_html(df, *, csv_href: str | None = None, max_rows: int = LONG_TABLE_ROWS) -> str:
    """The formatted table as HTML without an index, in a box that scrolls sideways rather than being cut;
    a table longer than ``max_rows`` is collapsed into ``<details>`` whose summary links to the CSV."""
    shown = format_table(df)
    body = shown.to_html(index=False, escape=True, border=0, classes="micronet-table", na_rep=MISSING)
    # Text columns (a reason, a URL) left-aligned and wrapping, so they stay on a 1,280 px page; numbers
    # right-aligned on one line. Jupyter's CSS right-aligns every cell, hence the inline style per cell.
    # A column holding a long unbroken token (a URL) may break it anywhere; others break only between words.
    long_token = [any(len(word) > 30 for v in shown.iloc[:, i] for word in str(v).split()) for i in range(shown.shape[1])]
    classes = ["t u" if long else "t" if a == "left" else "" for a, long in zip(_alignment(df), long_token)]

    def align_row(match: re.Match) -> str:
        cells = iter(classes)
        return re.sub(r"<(td|th)>", lambda m: (f'<{m.group(1)} class="{c}">' if (c := next(cells, "")) else f"<{m.group(1)}>"),
                      match.group(0))

    body = re.sub(r"<tr[^>]*>.*?</tr>", align_row, body, flags=re.S)
    # Headers may wrap after '_' (snake_case names are the widest cells of a numeric table).
    body = re.sub(r"<th([^>]*)>([^<]*)</th>",
                  lambda m: f"<th{m.group(1)}>" + m.group(2).replace("_", "_<wbr>") + "</th>", body)
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
