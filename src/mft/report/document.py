"""A tiny document model (headings, paragraphs, tables, images) rendered to Markdown and to one
self-contained HTML file (inline CSS, images as base64 data URIs, no external links), and written out.

Both renderers are deterministic: the same blocks give the same bytes.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

from mft.errors import MftError
from mft.records import write_text_atomic


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Para:
    text: str  # plain text; `code` spans allowed


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    align: list[str] = field(default_factory=list)  # "l" or "r" per column; default: first l, rest r

    def aligns(self) -> list[str]:
        return self.align or ["l"] + ["r"] * (len(self.header) - 1)


@dataclass
class Image:
    path: str  # relative to the document, e.g. plots/accuracy.png
    alt: str


Block = Heading | Para | Bullets | Table | Image


@dataclass
class Document:
    """A report or comparison: its blocks, the PNG bytes of the images they link, and data files written
    beside it (the numbers of a table as JSON)."""

    title: str
    blocks: list[Block] = field(default_factory=list)
    plots: dict[str, bytes] = field(default_factory=dict)  # "plots/x.png" -> PNG bytes
    data: dict[str, bytes] = field(default_factory=dict)  # "paired.json" -> its bytes

    def add_plot(self, name: str, png: bytes, alt: str) -> None:
        path = f"plots/{name}.png"
        self.plots[path] = png
        self.blocks.append(Image(path, alt))


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table_markdown(table: Table) -> str:
    rule = {"l": "---", "r": "---:"}
    lines = [
        "| " + " | ".join(map(_cell, table.header)) + " |",
        "|" + "|".join(rule[a] for a in table.aligns()) + "|",
    ]
    lines += ["| " + " | ".join(map(_cell, row)) + " |" for row in table.rows]
    return "\n".join(lines)


def to_markdown(blocks: list[Block]) -> str:
    parts = []
    for b in blocks:
        if isinstance(b, Heading):
            parts.append("#" * b.level + " " + b.text)
        elif isinstance(b, Para):
            parts.append(b.text)
        elif isinstance(b, Bullets):
            parts.append("\n".join(f"- {item}" for item in b.items))
        elif isinstance(b, Table):
            parts.append(table_markdown(b))
        elif isinstance(b, Image):
            parts.append(f"![{b.alt}]({b.path})")
    return "\n\n".join(parts) + "\n"


_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 980px;
       margin: 2em auto; padding: 0 1em; color: #1b1b1b; line-height: 1.45; }
h1, h2, h3 { line-height: 1.2; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; } th { background: #f3f3f3; }
td.r, th.r { text-align: right; font-variant-numeric: tabular-nums; } td.l, th.l { text-align: left; }
tr:nth-child(even) td { background: #fafafa; }
code { background: #f3f3f3; padding: 0 .25em; border-radius: 3px; }
img { max-width: 100%; height: auto; display: block; margin: .6em 0; }
p, li { max-width: 52em; }
""".strip()


def _inline(text: str) -> str:
    """Escape, then turn `code` spans into <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text, quote=False))


def to_html(blocks: list[Block], title: str, images: dict[str, bytes]) -> str:
    """One HTML file; each image's PNG bytes (images[image.path]) are embedded as a data URI."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>\n{_CSS}\n</style>",
        "</head>",
        "<body>",
    ]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{_inline(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            out.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Bullets):
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            al = b.aligns()
            out.append("<table>")
            out.append(
                "<tr>"
                + "".join(f'<th class="{a}">{_inline(h)}</th>' for a, h in zip(al, b.header, strict=True))
                + "</tr>"
            )
            for row in b.rows:
                out.append(
                    "<tr>"
                    + "".join(f'<td class="{a}">{_inline(c)}</td>' for a, c in zip(al, row, strict=True))
                    + "</tr>"
                )
            out.append("</table>")
        elif isinstance(b, Image):
            data = base64.b64encode(images[b.path]).decode("ascii")
            out.append(f'<img alt="{html.escape(b.alt)}" src="data:image/png;base64,{data}">')
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


def write_document(doc: Document, out: Path, stem: str) -> Path:
    """Write OUT/plots/*.png, the data files, OUT/STEM.html and OUT/STEM.md, each through a temp name;
    returns STEM.md.

    Plots and data files first, then the HTML, the Markdown last (it links the plots): a Markdown file that
    exists always has its plots beside it.
    """
    md = out / f"{stem}.md"
    try:
        for path, content in [*doc.plots.items(), *doc.data.items()]:
            write_text_atomic(out / path, content)
        write_text_atomic(out / f"{stem}.html", to_html(doc.blocks, doc.title, doc.plots))
        write_text_atomic(md, to_markdown(doc.blocks))
    except (PermissionError, NotADirectoryError, FileExistsError) as exc:
        raise MftError(
            f"cannot write the {stem} into {out} ({exc.strerror or exc})",
            hint="choose a writable directory with --out DIR",
        ) from None
    return md
