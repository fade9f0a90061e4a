"""Cite docs/method.md and docs/scoring.md instead of the spec files PAPER.md / SCORING.md (not in the repository).

Run from the repository root: ``python scripts/cite_docs.py``. Idempotent: library text and notebook code
get plain paths, README and notebook markdown get links; docs/ keeps the spec's section numbers, so every
"§" stays true. Re-run after merging a branch that still cites the spec files; prints the files it changed.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

DOC = {"PAPER": "method", "SCORING": "scoring"}
PLAIN = (
    (re.compile(r"\b(PAPER|SCORING)\.md\b"), lambda m: f"docs/{DOC[m[1]]}.md"),
    (re.compile(r"\b(PAPER|SCORING)(\s+)(?=§)"), lambda m: f"docs/{DOC[m[1]]}.md{m[2]}"),
    (re.compile(r"\bPAPER/SCORING\b"), lambda m: "docs/method.md / docs/scoring.md"),
)


def plain(text: str) -> str:
    for pattern, replace in PLAIN:
        text = pattern.sub(replace, text)
    return text


def linked(text: str, prefix: str) -> str:
    """Markdown: `PAPER.md` and bare PAPER.md become links to the docs page (relative to ``prefix``)."""
    text = re.sub(r"`(PAPER|SCORING)\.md`", lambda m: f"[`docs/{DOC[m[1]]}.md`]({prefix}docs/{DOC[m[1]]}.md)", text)
    text = re.sub(r"(?<![\[`/])\b(PAPER|SCORING)\.md\b", lambda m: f"[docs/{DOC[m[1]]}.md]({prefix}docs/{DOC[m[1]]}.md)", text)
    return plain(text)


def main() -> list[str]:
    changed = []
    for path in [*sorted(Path("micronet_lib").rglob("*.py")), *sorted(Path("tests").glob("*.py")),
                 *sorted(Path("notebooks/params").glob("*.yaml")), Path("Makefile")]:
        old = path.read_text()
        if plain(old) != old:
            path.write_text(plain(old))
            changed.append(str(path))
    for path, own in ((Path("docs/method.md"), "PAPER"), (Path("docs/scoring.md"), "SCORING")):
        old = path.read_text()  # a page citing the spec it stands in for cites its own sections
        new = plain(old.replace(f"`{own}.md` ", "").replace(f"({own}.md)", "").replace(f"{own}.md ", ""))
        if new != old:
            path.write_text(new)
            changed.append(str(path))
    readme = Path("README.md")
    old = readme.read_text()
    if linked(old, "") != old:
        readme.write_text(linked(old, ""))
        changed.append(str(readme))
    for path in sorted(Path("notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        dirty = False
        for cell in nb.cells:
            new = linked(cell.source, "../") if cell.cell_type == "markdown" else plain(cell.source)
            if new != cell.source:
                cell.source, dirty = new, True
        if dirty:
            nbformat.write(nb, path)  # cell ids and order kept; only the changed sources differ
            changed.append(str(path))
    return changed


if __name__ == "__main__":
    for name in main():
        print(name)
