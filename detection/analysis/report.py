"""One self-contained HTML file: inline CSS, every picture embedded as a base64 data URI, no script, no link to
anything outside the file, so it opens from disk (or an e-mail attachment) in any browser without a server."""
from __future__ import annotations

import base64
import html
from typing import Optional, Sequence

__all__ = ["image_tag", "table", "html_page"]

_STYLE = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 24px auto; max-width: 1100px;
       color: #222; line-height: 1.4; }
h1 { font-size: 22px; } h2 { font-size: 17px; border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 28px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f2f2f2; }
img { max-width: 100%; margin: 6px 12px 6px 0; vertical-align: top; }
p.note { color: #555; font-size: 13px; }
"""


def image_tag(data: bytes, alt: str, mime: str = "image/png") -> str:
    """<img> with the picture embedded as a data URI."""
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:{mime};base64,{encoded}">'


def table(rows: Sequence[Sequence], header: Optional[Sequence] = None) -> str:
    """An HTML table of already formatted cells (escaped here)."""
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in header) + "</tr>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def html_page(title: str, sections: Sequence[tuple], intro: str = "") -> str:
    """A complete page: `sections` are (heading, HTML body) pairs, `intro` plain text under the title."""
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>{html.escape(title)}</title>", f"<style>{_STYLE}</style>", "</head>", "<body>",
             f"<h1>{html.escape(title)}</h1>"]
    if intro:
        parts.append(f'<p class="note">{html.escape(intro)}</p>')
    for heading, body in sections:
        parts += [f"<h2>{html.escape(heading)}</h2>", body]
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"
