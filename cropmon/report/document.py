"""The report as a list of blocks (headings, paragraphs, bullets, tables, images), rendered twice: Markdown with the
PNGs beside it, and self-contained HTML (a page, or a fragment for a notebook cell). Also the few formatters every
report shares (percent, numbers, lists of names) and the one PNG encoder, so a figure's bytes are the same in the
file and in the HTML.

The HTML reads where people read it, a browser window or a notebook cell: a short table of contents links the
sections; a wide table scrolls inside its own box (the page never grows wider than the window) with a sticky
header and a sticky first column; numbers align right. All of it is scoped under `.cropmon-report`, so a notebook's
own styles stay as they are."""

from __future__ import annotations

import base64
import html
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: list[str]


@dataclass(frozen=True)
class Table:
    frame: pd.DataFrame
    caption: str = ""


@dataclass(frozen=True)
class Image:
    name: str  # file name beside the report
    png: bytes
    caption: str


Block = Heading | Paragraph | Bullets | Table | Image


def pct(value: float) -> str:
    return "n/a" if pd.isna(value) else f"{100 * value:.1f} %"


def num(value: float, digits: int = 2) -> str:
    return "n/a" if pd.isna(value) else f"{value:.{digits}f}"


def names(items: list[str]) -> str:
    """'A', 'A and B', 'A, B and C'."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]



# Bold in the blocks' text: two private-use characters, which no input carries (strong() removes them from its
# text), so a crop name holding '*' or '**' cannot open or close it.
_STRONG = ("\ue000", "\ue001")
_STRONG_PART = re.compile(f"({_STRONG[0]}[^{_STRONG[1]}]*{_STRONG[1]})")


def strong(text: object) -> str:
    """`text` in bold, in a Paragraph's or a bullet's text (rendered <strong> in HTML, **...** in Markdown)."""
    plain = str(text).replace(_STRONG[0], "").replace(_STRONG[1], "")
    return f"{_STRONG[0]}{plain}{_STRONG[1]}"


def _inline_parts(text: str) -> list[tuple[bool, str]]:
    """(bold?, text) pieces of a block's text."""
    return [(part.startswith(_STRONG[0]), part.strip("".join(_STRONG)))
            for part in _STRONG_PART.split(text) if part]



def _cells(frame: pd.DataFrame) -> pd.DataFrame:
    """Every cell as display text: floats with 2 decimals, ints with thousands separators, blanks for missing."""

    def show(value: Any) -> str:
        if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
            return ""
        if isinstance(value, bool | np.bool_):
            return "yes" if value else "no"
        if isinstance(value, int | np.integer):
            return f"{value:,}"
        if isinstance(value, float | np.floating):
            return f"{value:,.2f}"
        return str(value)

    return frame.astype(object).map(show)


def anchor(text: str) -> str:
    """A heading's anchor, GitHub style: 'Active-learning plan' -> 'active-learning-plan'."""
    return re.sub(r"[^\w\- ]", "", text.lower()).strip().replace(" ", "-")


def _sections(blocks: list[Block]) -> list[str]:
    return [b.text for b in blocks if isinstance(b, Heading) and b.level == 2]


# Markdown that text from the inputs (crop names, labels, field ids, file names) could carry: HTML tags and entities
# (a Markdown viewer renders them), emphasis, code, tables' pipes, links and images (a ']' before '(' or '['); at
# the start of a line a heading, quote, list or link definition. What starts none of these stays as it is, so the
# report's own text reads the same: "agreement < 0.7", an interval "[0.61, 0.72]".
_MD_SPECIAL = re.compile(r"[\\`*|~#]|\](?=[(\[])|(?<![^\W_])_|_(?![^\W_])|<(?=[A-Za-z/!?])|&(?=#?\w+;)")
_MD_LINE_START = re.compile(r"^(\s*)([>+=\[-]|\d+(?=[.)]))")
_MD_ENTITIES = {"<": "&lt;", "&": "&amp;"}


def _md_text(text: object, *, line_start: bool = True) -> str:
    """Text shown as it is in Markdown, as report.html shows it (html.escape): HTML escaped, Markdown's
    punctuation backslash-escaped (an underscore inside a word stays: it emphasises nothing), whitespace runs and
    line breaks made one space (as HTML shows them).
    `line_start`: the text begins a line (a paragraph, a bullet), where '#', '>', '-', '1.' would start a block."""
    flat = re.sub(r"\s+", " ", str(text))  # one line; four leading spaces would make a code block
    escaped = _MD_SPECIAL.sub(lambda m: _MD_ENTITIES.get(m.group(0), "\\" + m.group(0)), flat)
    return _MD_LINE_START.sub(_escape_line_start, escaped) if line_start else escaped


def _escape_line_start(m: re.Match) -> str:
    """'# x' -> '\\# x'; '1. x' -> '1\\. x' (a digit cannot be escaped: its period can)."""
    lead, mark = m.group(1), m.group(2)
    return lead + (mark + "\\" if mark[0].isdigit() else "\\" + mark)


def _inline_markdown(text: str) -> str:
    """Escape, with strong() pieces in **bold** (the one markup of the blocks' text, as in _inline_html)."""
    return "".join(_bold(part) if bold else _md_text(part, line_start=i == 0)
                   for i, (bold, part) in enumerate(_inline_parts(text)))


def _bold(text: str, marker: str = "**") -> str:
    """**text** (or *text*), its outer spaces outside the markers (CommonMark's '** x**' is no bold)."""
    inner = _md_text(text.strip(), line_start=False)
    lead, trail = text[: len(text) - len(text.lstrip())], text[len(text.rstrip()):]
    return f"{' ' if lead else ''}{marker}{inner}{marker}{' ' if trail else ''}" if inner else " " * bool(text)


def render_markdown(title: str, blocks: list[Block]) -> str:
    """The report as Markdown, a list of links to its sections first; images are the PNG files beside it. Every
    text is escaped (`_md_text`): what comes from the inputs shows as text, never as HTML or markup."""
    out = [f"# {_md_text(title)}", ""]
    if len(_sections(blocks)) > 1:
        out += ["Contents: " + " | ".join(f"[{_md_text(s)}](#{anchor(s)})" for s in _sections(blocks)), ""]
    for block in blocks:
        if isinstance(block, Heading):
            out += ["#" * block.level + " " + _md_text(block.text), ""]
        elif isinstance(block, Paragraph):
            out += [_inline_markdown(block.text), ""]
        elif isinstance(block, Bullets):
            out += [f"- {_inline_markdown(item)}" for item in block.items] + [""]
        elif isinstance(block, Table):
            cells = _cells(block.frame)
            rows = [list(cells.columns), *cells.to_numpy().tolist()]
            out += [_bold(block.caption, "*").strip(), ""] if block.caption else []
            lines = ["| " + " | ".join(_md_text(c, line_start=False) for c in row) + " |" for row in rows]
            out += [lines[0], "| " + " | ".join(["---"] * cells.shape[1]) + " |", *lines[1:], ""]
        elif isinstance(block, Image):
            out += [f"![{_md_text(block.caption)}]({block.name})", "", _bold(block.caption, "*").strip(), ""]
    return "\n".join(out)


_PAGE_CSS = "body { margin: 2em auto; padding: 0 1em; }"
_CSS = """
.cropmon-report { font-family: system-ui, sans-serif; max-width: 1200px; margin: 0 auto; color: #222;
  line-height: 1.4; }
.cropmon-report p, .cropmon-report li { overflow-wrap: anywhere; }
.cropmon-report nav.toc { background: #f6f6f6; border: 1px solid #ddd; padding: 0.4em 0.9em; margin: 0.5em 0 1em; }
.cropmon-report nav.toc ol { margin: 0.2em 0; padding-left: 1.4em; columns: 2; }
.cropmon-report .table-wrap { width: fit-content; max-width: 100%; max-height: 34em; overflow: auto;
  margin: 0.2em 0 1.5em; border: 1px solid #ccc; }
.cropmon-report table { border-collapse: separate; border-spacing: 0; font-size: 0.85em; margin: 0; }
.cropmon-report th, .cropmon-report td { border-right: 1px solid #ddd; border-bottom: 1px solid #ddd;
  padding: 3px 7px; text-align: left; vertical-align: top; max-width: 32em; overflow-wrap: break-word; }
.cropmon-report thead th { position: sticky; top: 0; z-index: 2; background: #eef0f3; }
.cropmon-report tbody th, .cropmon-report tbody td:first-child { position: sticky; left: 0; z-index: 1;
  background: #fff; font-weight: 600; }
.cropmon-report thead th:first-child { left: 0; z-index: 3; }
.cropmon-report .num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.cropmon-report .caption, .cropmon-report figcaption { color: #555; font-size: 0.9em; }
.cropmon-report figure { margin: 1em 0 2em; }
.cropmon-report img { max-width: 100%; height: auto; border: 1px solid #ddd; }
"""
_NUMBER = re.compile(r"^[-+]?(\d[\d,]*)?\.?\d+( ?%)?$")


def _inline_html(text: str) -> str:
    """Escape, with strong() pieces in <strong>."""
    return "".join(f"<strong>{html.escape(part)}</strong>" if bold else html.escape(part)
                   for bold, part in _inline_parts(text))


def _table_html(block: Table) -> str:
    """A table in its own scrolling box: header row sticky, first column sticky, numbers right-aligned."""
    cells = _cells(block.frame)
    rows = cells.to_numpy().tolist()
    numeric = [bool(len(rows)) and all(_NUMBER.match(r[j]) or not r[j] for r in rows) and any(r[j] for r in rows)
               for j in range(cells.shape[1])]

    def cell(tag: str, text: str, is_number: bool) -> str:
        attrs = " class='num'" if is_number else ""
        return f"<{tag}{attrs}>{html.escape(text)}</{tag}>"

    head = "".join(cell("th", str(c), numeric[j]) for j, c in enumerate(cells.columns))
    body = "".join(
        "<tr>" + "".join(cell("td", text, bool(_NUMBER.match(text))) for text in row) + "</tr>" for row in rows
    )
    label = html.escape(block.caption or "table")
    caption = f"<div class='caption'>{html.escape(block.caption)}</div>" if block.caption else ""
    return (f"{caption}<div class='table-wrap' role='region' aria-label='{label}' tabindex='0'><table>"
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")


def render_html(title: str, blocks: list[Block], *, page: bool = True) -> str:
    """The report as self-contained HTML (images as base64 data URIs, no script, no external file): a whole page,
    or with `page=False` a fragment for a notebook cell (its styles scoped to the report)."""
    out = [f"<div class='cropmon-report'><style>{_CSS}</style>", f"<h1>{html.escape(title)}</h1>"]
    sections = _sections(blocks)
    if len(sections) > 1:
        links = "".join(f"<li><a href='#{anchor(s)}'>{html.escape(s)}</a></li>" for s in sections)
        out.append(f"<nav class='toc' aria-label='Contents'><strong>Contents</strong><ol>{links}</ol></nav>")
    for block in blocks:
        if isinstance(block, Heading):
            ident = f" id='{anchor(block.text)}'" if block.level == 2 else ""
            out.append(f"<h{block.level}{ident}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            out.append(f"<p>{_inline_html(block.text)}</p>")
        elif isinstance(block, Bullets):
            out.append("<ul>" + "".join(f"<li>{_inline_html(item)}</li>" for item in block.items) + "</ul>")
        elif isinstance(block, Table):
            out.append(_table_html(block))
        elif isinstance(block, Image):
            data = base64.b64encode(block.png).decode("ascii")
            out.append(
                f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(block.caption)}'>"
                f"<figcaption>{html.escape(block.caption)}</figcaption></figure>"
            )
    out.append("</div>")
    if not page:
        return "\n".join(out)
    head = (f"<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{html.escape(title)}</title>"
            f"<style>{_PAGE_CSS}</style></head><body>")
    return "\n".join([head, *out, "</body></html>"])


@dataclass(frozen=True)
class Document:
    """A rendered-on-demand report: displayed by a notebook cell (`_repr_html_`), or saved as a page / Markdown."""

    title: str
    blocks: list[Block]

    @property
    def html(self) -> str:
        """The HTML fragment of a notebook cell (styles scoped to the report)."""
        return render_html(self.title, self.blocks, page=False)

    @property
    def markdown(self) -> str:
        return render_markdown(self.title, self.blocks)

    def _repr_html_(self) -> str:
        return self.html

    def save(self, path: str | Path) -> Path:
        """Write the self-contained HTML page (or Markdown, for a .md path; its images are not written)."""
        path = Path(path)
        text = self.markdown if path.suffix.lower() == ".md" else render_html(self.title, self.blocks)
        path.write_text(text, encoding="utf-8")
        return path


def png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()

