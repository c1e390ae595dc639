"""The report as a list of blocks (headings, paragraphs, bullets, tables, images), rendered twice: Markdown with the
PNGs beside it, and one self-contained HTML page. Also the few formatters every report shares (percent, numbers,
lists of names) and the one PNG encoder, so a figure's bytes are the same in the file and in the HTML."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
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



def lookup(info: Mapping[str, Any], *keys: str) -> Any:
    """info[k1][k2]..., or None when a level is missing or not a mapping."""
    for key in keys:
        if not isinstance(info, Mapping) or key not in info:
            return None
        info = info[key]
    return info



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


def render_markdown(title: str, blocks: list[Block]) -> str:
    """The report as Markdown; images are the PNG files beside it."""
    out = [f"# {title}", ""]
    for block in blocks:
        if isinstance(block, Heading):
            out += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            out += [block.text, ""]
        elif isinstance(block, Bullets):
            out += [f"- {item}" for item in block.items] + [""]
        elif isinstance(block, Table):
            cells = _cells(block.frame)
            rows = [list(cells.columns), ["---"] * cells.shape[1], *cells.to_numpy().tolist()]
            out += [f"*{block.caption}*", ""] if block.caption else []
            out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows] + [""]
        elif isinstance(block, Image):
            out += [f"![{block.caption}]({block.name})", "", f"*{block.caption}*", ""]
    return "\n".join(out)


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; }
th { background: #f0f0f0; }
figure { margin: 1em 0 2em; }
img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption, caption { color: #555; font-size: 0.9em; text-align: left; }
"""


def _inline_html(text: str) -> str:
    """Escape, then turn **bold** into <strong>."""
    parts = html.escape(text).split("**")
    return "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))


def render_html(title: str, blocks: list[Block]) -> str:
    """The report as one self-contained HTML page (images as base64 data URIs, no script, no external file)."""
    out = [
        f"<!doctype html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            out.append(f"<p>{_inline_html(block.text)}</p>")
        elif isinstance(block, Bullets):
            out.append("<ul>" + "".join(f"<li>{_inline_html(item)}</li>" for item in block.items) + "</ul>")
        elif isinstance(block, Table):
            table = _cells(block.frame).to_html(index=False, escape=True, border=0)
            caption = f"<caption>{html.escape(block.caption)}</caption>" if block.caption else ""
            out.append(table.replace("<thead>", f"{caption}<thead>", 1))
        elif isinstance(block, Image):
            data = base64.b64encode(block.png).decode("ascii")
            out.append(
                f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(block.caption)}'>"
                f"<figcaption>{html.escape(block.caption)}</figcaption></figure>"
            )
    out.append("</body></html>")
    return "\n".join(out)


def png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()

