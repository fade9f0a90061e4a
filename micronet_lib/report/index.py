"""The landing page of a results set (issue #32): every claim of every report at a glance.

``write_index(folder)`` reads the set's ``tables/NN_claims.csv`` (written by each report's ``ClaimBoard``)
and ``manifest.json`` and writes ``index.html`` (for a browser) and ``index.md`` (for GitHub): per claim
its verdict, effect and 95 % interval, the design and budget it was tested under and a link to its box in
the report; then whether the set was made by the checked-out code and, if not, which later commits touch
what it depends on (``git log``; without git the page says it could not tell). The verdicts also go into
the manifest (``claims``). ``readme_table`` is the README's claims table, generated from the same rows;
``update_readme`` rewrites it between ``<!-- claims:begin -->`` and ``<!-- claims:end -->``.

``micronet reproduce`` writes the index after the notebooks; ``micronet reproduce --index-only``
regenerates it alone.
"""

from __future__ import annotations

import html
import json
import math
import re
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from micronet_lib.report.claims import CLAIMS, claim_anchor
from micronet_lib.fileio import atomic_write_json, atomic_write_text

__all__ = ["DEPENDS_ON", "ClaimRow", "Freshness", "claim_rows", "freshness", "index_markdown", "index_html",
           "readme_table", "update_readme", "README_BEGIN", "README_END", "write_index"]

_REPO = Path(__file__).resolve().parents[2]  # the repository: micronet_lib/report/index.py
# What a set's numbers depend on: a later commit touching one of these may change them.
DEPENDS_ON = ("micronet_lib", "notebooks", "pyproject.toml", "constraints.txt")
README_BEGIN, README_END = "<!-- claims:begin -->", "<!-- claims:end -->"
_CLAIMS_CSV = re.compile(r"^(\d\d)_claims\.csv$")


@dataclass(frozen=True)
class ClaimRow:
    """One claim of one report as the landing page shows it."""

    report: str  # "02_regularizers"
    key: str
    claim: str
    verdict: str
    effect: str  # "−0.20 points, 95 % CI [−3.78, 3.38], 3 seeds" or the report's result text
    setup: str
    link: str  # relative to the set's folder: html/02_regularizers.html#claim-ortho_helps


def _num(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _signed(x: float) -> str:
    return f"{x:+.2f}".replace("-", "−")


def _effect_text(row: Mapping[str, Any]) -> str:
    est, low, high, n = (_num(row.get(k)) for k in ("effect", "effect_low", "effect_high", "effect_n"))
    if est is None:
        return str(row.get("result") or "—")
    unit = " %" if "Wilson" in str(row.get("effect_method") or "") else " points"
    span = f", 95 % CI [{_signed(low)}, {_signed(high)}]" if low is not None and high is not None else ", no interval"
    seeds = f", {int(n)} seed{'s' if n != 1 else ''}" if n is not None and "seed" in str(row.get("effect_method")) else ""
    return f"{_signed(est) if unit == ' points' else f'{est:.2f}'}{unit}{span}{seeds}"


def _key_of(row: Mapping[str, Any]) -> str:
    key = row.get("key")
    if isinstance(key, str) and key in CLAIMS:
        return key
    # Sets written before the claims table had a key column: match the claim's sentence.
    return next((k for k, c in CLAIMS.items() if c.text == row.get("claim")), "?")


def claim_rows(folder: str | Path) -> list[ClaimRow]:
    """Every claim of every report of the set in ``folder``, in report order."""
    import pandas as pd

    folder = Path(folder)
    reports = {p.stem[:2]: p.stem for p in sorted((folder / "html").glob("[0-9][0-9]_*.html"))}
    rows = []
    for path in sorted((folder / "tables").glob("*_claims.csv")):
        match = _CLAIMS_CSV.match(path.name)
        if not match:
            continue
        report = reports.get(match.group(1), f"{match.group(1)}_report")
        for record in pd.read_csv(path, keep_default_na=False).to_dict("records"):
            key = _key_of(record)
            rows.append(ClaimRow(report=report, key=key, claim=str(record.get("claim", "")),
                                 verdict=str(record.get("verdict", "")), effect=_effect_text(record),
                                 setup=str(record.get("setup", "")) or "—",
                                 link=f"html/{report}.html#{claim_anchor(key)}"))
    return rows


@dataclass(frozen=True)
class Freshness:
    """Whether the set was made by the checked-out code: ``state`` is "current", "stale" or "unknown"."""

    state: str
    made_by: str | None  # the commit named by the manifest (reports)
    runs_by: str | None  # the commit that trained its run records, when the manifest says
    checked_out: str | None
    later: tuple[str, ...]  # "abc1234 2026-12-01 subject (paths)" per later commit touching DEPENDS_ON
    note: str


def _git(*args: str, repo: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def freshness(manifest: Mapping[str, Any], *, repo: str | Path = _REPO) -> Freshness:
    """Compare the set's commit with the checkout: the later commits that touch ``DEPENDS_ON``."""
    repo = Path(repo)
    made_by = manifest.get("commit")
    runs_by = (manifest.get("runs") or {}).get("commit") or made_by
    head = _git("rev-parse", "HEAD", repo=repo)
    if not made_by or head is None:
        why = "the manifest names no commit" if not made_by else "git is not available here (or this is no checkout)"
        return Freshness("unknown", made_by, runs_by, None, (), f"Could not tell whether this set is current: {why}.")
    head = head.strip()
    oldest = runs_by if runs_by and _git("merge-base", "--is-ancestor", runs_by, made_by, repo=repo) is not None else made_by
    log = _git("log", "--no-merges", "--format=%x00%h %cs %s", "--name-only", f"{oldest}..{head}", "--", *DEPENDS_ON,
               repo=repo)
    if log is None:
        return Freshness("unknown", made_by, runs_by, head, (),
                         f"Could not tell whether this set is current: commit {made_by[:12]} is not in this checkout's "
                         "history.")
    later = []
    for block in log.split("\0")[1:]:  # one block per commit: its line, a blank line, the paths it touches
        lines = [line for line in block.splitlines() if line.strip()]
        tops = sorted({"/".join(p.split("/")[:2]) for p in lines[1:]})
        # A commit the reports were rendered after changes the run records only (they were trained before it).
        runs_only = oldest != made_by and _git("merge-base", "--is-ancestor", lines[0].split()[0], made_by,
                                               repo=repo) is not None
        later.append(f"{lines[0]} ({', '.join(tops[:4])}{', …' if len(tops) > 4 else ''})"
                     + (" — before the reports were rendered: affects the run records" if runs_only else ""))
    if not later:
        return Freshness("current", made_by, runs_by, head, (),
                         f"Made by the checked-out code: no commit after {oldest[:12]} touches "
                         f"{', '.join(DEPENDS_ON)}.")
    after_reports = sum(not line.endswith("affects the run records") for line in later)
    return Freshness("stale", made_by, runs_by, head, tuple(later),
                     f"Stale: {len(later)} commit(s) after {oldest[:12]} touch what this set depends on "
                     f"({', '.join(DEPENDS_ON)}), {after_reports} of them after its reports were rendered; its "
                     "numbers may differ when rebuilt with `micronet reproduce "
                     "--publish --rebuild`.")


def _design(manifest: Mapping[str, Any]) -> list[tuple[str, str]]:
    b = manifest.get("budget", {})
    machine = manifest.get("machine", {})
    seconds = sum(n.get("wall_seconds", 0) for n in manifest.get("notebooks", {}).values())
    per_class = "/".join(str(b.get(k, "all")) for k in ("train_per_class", "val_per_class", "test_per_class"))
    return [("profile", f"`{manifest.get('profile', '?')}`"), ("data", f"`{manifest.get('data', '?')}`"),
            ("images per class (train/val/test)", per_class),
            ("epochs per training run", str(b.get("epochs", "profile default"))),
            ("seeds", ", ".join(map(str, manifest.get("seeds", [])))
             + (f" (03/04 use the first {b['comparison_seeds']})" if "comparison_seeds" in b else "")),
            ("model", f"{b.get('model', '?')} × {b.get('width_mult', '?')}"),
            ("augmentation pipelines compared (03)", ", ".join(b.get("augment_pipelines", [])) or "—"),
            ("machine", f"{machine.get('cpu', '?')}, {machine.get('threads', '?')} threads, device "
                        f"{machine.get('device', '?')}"),
            ("notebook wall time (the latest render of each)", f"{seconds / 60:,.1f} min")]


def _rendered_by(manifest: Mapping[str, Any], fallback: str | None) -> str:
    """``"`abc` (01_architecture); `def` (00_setup, 02_…)"`` when notebooks were rendered by several commits."""
    by: dict[str, list[str]] = {}
    for name, entry in sorted(manifest.get("notebooks", {}).items()):
        by.setdefault(str(entry.get("commit") or "?")[:12], []).append(name)
    if len(by) <= 1:
        return f"`{(fallback or '?')[:12]}`"
    return "; ".join(f"`{commit}` ({', '.join(names)})" for commit, names in by.items())


def _freshness_lines(f: Freshness, manifest: Mapping[str, Any]) -> list[str]:
    lines = [f.note, f"Reports rendered by commit {_rendered_by(manifest, f.made_by)}"
             + (f"; run records trained by commit `{f.runs_by[:12]}`" if f.runs_by and f.runs_by != f.made_by else "")
             + (f"; checked out when this page was written: `{f.checked_out[:12]}`." if f.checked_out else ".")]
    return lines


def index_markdown(manifest: Mapping[str, Any], rows: Sequence[ClaimRow], fresh: Freshness) -> str:
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    out = [f"# Results set `{manifest.get('set', '?')}`", "",
           "Every claim the reports test, with the verdict computed by the rules of "
           "[docs/verdicts.md](../../docs/verdicts.md). Generated by `micronet reproduce` (alone: "
           "`micronet reproduce --index-only`); do not edit.", "", "## Claims", "",
           "| report | claim | verdict | effect (95 % interval) | design and budget |", "|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| [{r.report[:2]}]({r.link}) | {esc(r.claim)} | **{esc(r.verdict)}** | {esc(r.effect)} | "
                   f"{esc(r.setup)} |")
    out += ["", "## Design and budget", "", "| | |", "|---|---|"]
    out += [f"| {k} | {esc(v)} |" for k, v in _design(manifest)]
    out += ["", "## Is this set current?", ""] + _freshness_lines(fresh, manifest)
    if fresh.later:
        out += ["", "Later commits that touch what the set depends on:", ""] + [f"- {c}" for c in fresh.later]
    return "\n".join(out) + "\n"


_VERDICT_COLOURS = {"reproduced exactly": "#1b7837", "reproduced": "#1b7837", "inconclusive, leaning for": "#5aae61",
                    "inconclusive, leaning against": "#c2530a", "inconclusive": "#777",
                    "not reproduced at this budget": "#b2182b", "contradicted": "#b2182b",
                    "not verifiable here": "#555"}
_CSS = ("body{font-family:system-ui,sans-serif;max-width:1240px;margin:1.5em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;width:100%;font-size:0.9em}th,td{border-bottom:1px solid #ddd;padding:0.35em "
        "0.5em;text-align:left;vertical-align:top}th{background:#f4f4f4}.v{font-weight:600;white-space:nowrap}"
        ".stale{background:#fff4e5;border-left:4px solid #c2530a;padding:0.5em 1em}"
        ".current{background:#eef7ee;border-left:4px solid #1b7837;padding:0.5em 1em}"
        ".unknown{background:#f4f4f4;border-left:4px solid #777;padding:0.5em 1em}td.setup{font-size:0.85em;color:#444}")


def index_html(manifest: Mapping[str, Any], rows: Sequence[ClaimRow], fresh: Freshness) -> str:
    e = html.escape
    code = lambda s: re.sub(r"`([^`]*)`", r"<code>\1</code>", e(s))  # noqa: E731
    body = [f"<h1>Results set <code>{e(str(manifest.get('set', '?')))}</code></h1>",
            f'<div class="{fresh.state}">' + "<br>".join(code(x) for x in _freshness_lines(fresh, manifest)) + "</div>",
            "<h2>Claims</h2><p>Every claim the reports test; verdicts follow the rules of "
            '<a href="../../docs/verdicts.md">docs/verdicts.md</a>. Each row links to the claim box in its report.</p>',
            "<table><tr><th>report</th><th>claim</th><th>verdict</th><th>effect (95 % interval)</th>"
            "<th>design and budget</th></tr>"]
    for r in rows:
        colour = _VERDICT_COLOURS.get(r.verdict, "#222")
        body.append(f'<tr><td><a href="{e(r.link)}">{e(r.report)}</a></td><td>{e(r.claim)}</td>'
                    f'<td class="v" style="color:{colour}">{e(r.verdict)}</td><td>{e(r.effect)}</td>'
                    f'<td class="setup">{code(r.setup)}</td></tr>')
    body.append("</table><h2>Design and budget</h2><table>")
    body += [f"<tr><th>{e(k)}</th><td>{code(v)}</td></tr>" for k, v in _design(manifest)]
    body.append("</table>")
    if fresh.later:
        body.append("<h2>Later commits that touch what the set depends on</h2><ul>"
                    + "".join(f"<li><code>{e(c)}</code></li>" for c in fresh.later) + "</ul>")
    title = f"Results set {manifest.get('set', '')}"
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>'
            f"<style>{_CSS}</style></head><body>" + "\n".join(body) + "</body></html>\n")


def readme_table(rows: Sequence[ClaimRow], set_path: str) -> str:
    """The README's claims table (between the markers): one row per claim, linked to the set's reports."""
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    out = [f"<!-- generated from {set_path}/index.md by `micronet reproduce --index-only`; do not edit by hand -->",
           "", "| claim | report | verdict | effect (95 % interval) |", "|---|---|---|---|"]
    out += [f"| {esc(r.claim)} | [{r.report[:2]}]({set_path}/{r.link}) | **{esc(r.verdict)}** | {esc(r.effect)} |"
            for r in rows]
    out += ["", f"Design, budget and whether the set is current: [{set_path}/index.md]({set_path}/index.md)."]
    return "\n".join(out)


def readme_block(text: str) -> tuple[str, str] | None:
    """``(set_path, block)`` of a README's claims block, or None when it has no markers."""
    match = re.search(re.escape(README_BEGIN) + r"\n(.*?)\n" + re.escape(README_END), text, flags=re.S)
    if not match:
        return None
    named = re.search(r"generated from (\S+)/index\.md", match.group(1))
    return (named.group(1) if named else ""), match.group(1)


def update_readme(readme: str | Path, folder: str | Path, rows: Sequence[ClaimRow]) -> bool:
    """Rewrite the README's claims block when it names the set in ``folder``; True when it changed."""
    readme, folder = Path(readme), Path(folder).resolve()
    text = readme.read_text()
    found = readme_block(text)
    if found is None or not found[0] or (readme.parent / found[0]).resolve() != folder:
        return False
    new = text.replace(found[1], readme_table(rows, found[0]), 1)
    if new != text:
        atomic_write_text(readme, new)
    return new != text


def write_index(folder: str | Path, *, repo: str | Path = _REPO) -> dict[str, Path]:
    """Write ``index.md`` + ``index.html`` of the set in ``folder`` and put its verdicts into the manifest."""
    folder = Path(folder)
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text()) if path.is_file() else {"set": folder.name}
    rows = claim_rows(folder)
    fresh = freshness(manifest, repo=repo)
    manifest["claims"] = [{k: v for k, v in asdict(r).items() if k in ("report", "key", "verdict", "effect", "link")}
                          for r in rows]
    if path.is_file():
        atomic_write_json(path, manifest)
    atomic_write_text(folder / "index.md", index_markdown(manifest, rows, fresh))
    atomic_write_text(folder / "index.html", index_html(manifest, rows, fresh))
    return {"md": folder / "index.md", "html": folder / "index.html", "manifest": path}
