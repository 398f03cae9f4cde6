"""A report as blocks (heading, paragraph, Markdown lines, table, figure), rendered twice:
as Markdown (figures linked) and as one self-contained HTML page (figures inlined as
base64 PNG), so both always say the same thing."""

from __future__ import annotations

import base64
import html
from pathlib import Path


class Doc:
    """Blocks of a report: ("h", level, text) | ("p", text) | ("table", header, rows) | ("fig", path, caption)."""

    def __init__(self) -> None:
        self.blocks: list[tuple] = []

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, header: list[str], rows: list[list]) -> None:
        self.blocks.append(("table", header, [[str(c) for c in r] for r in rows]))

    def md(self, lines: list[str]) -> None:
        """Markdown lines (paragraphs, '- ' lists, '|' tables) from another module."""
        self.blocks.append(("md", lines))

    def fig(self, path: Path, caption: str) -> None:
        if path.is_file():
            self.blocks.append(("fig", path, caption))

    def markdown(self, root: Path) -> str:
        out = []
        for b in self.blocks:
            if b[0] == "h":
                out.append("#" * b[1] + " " + b[2])
            elif b[0] == "p":
                out.append(b[1])
            elif b[0] == "md":
                out.append("\n".join(b[1]))
            elif b[0] == "table":
                cell = lambda c: c.replace("|", "\\|").replace("\n", " ")  # noqa: E731
                lines = ["| " + " | ".join(b[1]) + " |", "|" + "---|" * len(b[1])]
                out.append("\n".join(lines + ["| " + " | ".join(cell(c) for c in r) + " |" for r in b[2]]))
            else:
                out.append(f"![{b[2]}]({b[1].relative_to(root).as_posix()})\n\n*{b[2]}*")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        body = []
        for b in self.blocks:
            if b[0] == "h":
                body.append(f"<h{b[1]}>{html.escape(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                body.append(f"<p>{html.escape(b[1])}</p>")
            elif b[0] == "md":
                body.append(_md_html(b[1]))
            elif b[0] == "table":
                head = "".join(f"<th>{html.escape(c)}</th>" for c in b[1])
                rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in b[2])
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            else:
                data = base64.b64encode(b[1].read_bytes()).decode()
                body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(b[2])}">'
                            f"<figcaption>{html.escape(b[2])}</figcaption></figure>")
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>\n")


def _md_html(lines: list[str]) -> str:
    """The small Markdown subset `Doc.md` takes: '|' tables, '- ' lists, plain lines."""
    out, i = [], 0
    while i < len(lines):
        j = i
        if lines[i].startswith("|"):
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            cells = [[c.strip() for c in row.strip("|").split("|")] for row in lines[i:j] if "---" not in row]
            head = "".join(f"<th>{html.escape(c)}</th>" for c in cells[0])
            body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in cells[1:])
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif lines[i].startswith("- "):
            while j < len(lines) and lines[j].startswith("- "):
                j += 1
            out.append("<ul>" + "".join(f"<li>{html.escape(x[2:])}</li>" for x in lines[i:j]) + "</ul>")
        else:
            j = i + 1
            if lines[i].strip():
                out.append(f"<p>{html.escape(lines[i])}</p>")
        i = j
    return "".join(out)


CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.45;color:#222}"
       "table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;"
       "padding:3px 7px;vertical-align:top}th{background:#f3f3f3}img{max-width:100%}"
       "figcaption{color:#555;font-size:13px}")
