"""Every results table in README.md and docs/ is printed by `mft report` from the committed files.

A table copied from a report is preceded by a comment naming it: `<!-- from results/<dir>/report.md -->`.
Each such table must appear verbatim in that file, and each committed report must be what `mft report`
writes from the files committed beside it (so editing a number in the docs, or committing a report from
files that were not committed, fails here). Every table in docs/results.md must carry such a comment.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mft.report import write_report

ROOT = Path(__file__).resolve().parents[2]
FROM = re.compile(r"<!-- from (results/\S+\.md) -->")
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _tables(text: str) -> list[tuple[str | None, str]]:
    """Each markdown table of `text` with the report it says it comes from (None: no comment above it)."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and re.match(r"^\|[-:| ]+\|$", lines[i + 1]):
            j = i
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            above = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
            source = FROM.search(above)
            out.append((source.group(1) if source else None, "\n".join(lines[i:j])))
            i = j
        else:
            i += 1
    return out


def _cited() -> list[tuple[Path, str, str]]:
    return [(doc, src, table) for doc in DOCS for src, table in _tables(doc.read_text()) if src]


def test_every_results_table_names_its_report() -> None:
    unnamed = [t.splitlines()[0] for src, t in _tables((ROOT / "docs/results.md").read_text()) if src is None]
    assert not unnamed, unnamed


@pytest.mark.parametrize("doc,source,table", _cited(), ids=lambda x: getattr(x, "name", str(x)[:40]))
def test_a_cited_table_is_in_its_report(doc: Path, source: str, table: str) -> None:
    assert table in (ROOT / source).read_text(), f"{doc.name}: a table differs from {source}"


@pytest.mark.parametrize("report", sorted({src for _, src, _ in _cited()}))
def test_a_cited_report_is_what_mft_report_writes_from_the_committed_files(
    report: str, tmp_path: Path
) -> None:
    path = ROOT / report
    written = write_report(path.parent, out=tmp_path)
    assert written.read_text() == path.read_text()


def test_tables_are_found_with_their_comment() -> None:
    text = "intro\n<!-- from results/x/report.md -->\n\n| a | b |\n|---|---:|\n| 1 | 2 |\n\n"
    text += "| c |\n|---|\n| 3 |\n"
    assert _tables(text) == [
        ("results/x/report.md", "| a | b |\n|---|---:|\n| 1 | 2 |"),
        (None, "| c |\n|---|\n| 3 |"),
    ]
