"""Streaming readers: formats, gzip, BOM, and one-line errors naming file:line."""

from __future__ import annotations

import gzip
import json

import pytest

from transfergen.data.readers import iter_documents
from transfergen.errors import UserError


def docs(paths, **kw):
    return list(iter_documents([str(p) for p in paths], **kw))


def test_text_line_per_doc_skips_empty_and_strips_newlines(tmp_path):
    p = tmp_path / "a.txt"
    p.write_bytes(b"first doc\r\n\n   \nsecond  doc \nthird")
    assert docs([p]) == ["first doc", "second  doc ", "third"]


def test_text_blank_separated_paragraphs(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("\n\npara one\nline two\n\n\npara two\n  \nlast\n", encoding="utf-8")
    assert docs([p], doc_sep="blank") == ["para one\nline two", "para two", "last"]


def test_bom_stripped_on_first_line_only(tmp_path):
    p = tmp_path / "a.txt"
    p.write_bytes(b"\xef\xbb\xbfhello\n\xe4\xbd\xa0\xe5\xa5\xbd\n")
    assert docs([p]) == ["hello", "你好"]


def test_gzip_text_and_multiple_files_in_order(tmp_path):
    a = tmp_path / "a.txt.gz"
    with gzip.open(a, "wt", encoding="utf-8") as fh:
        fh.write("one\ntwo\n")
    b = tmp_path / "b.txt"
    b.write_text("three\n", encoding="utf-8")
    assert docs([a, b]) == ["one", "two", "three"]


def test_jsonl_plain_gz_and_forced_format(tmp_path):
    rows = [{"text": "alpha", "id": 1}, {"text": ""}, {"body": "x", "text": "beta\ngamma"}]
    payload = "\n".join(json.dumps(r) for r in rows) + "\n\n"
    plain = tmp_path / "a.jsonl"
    plain.write_text(payload, encoding="utf-8")
    gz = tmp_path / "b.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as fh:
        fh.write(payload)
    forced = tmp_path / "c.data"
    forced.write_text(json.dumps({"body": "custom"}) + "\n", encoding="utf-8")
    assert docs([plain, gz]) == ["alpha", "beta\ngamma"] * 2
    assert docs([forced], fmt="jsonl", text_field="body") == ["custom"]


def test_auto_treats_other_extensions_as_text(tmp_path):
    p = tmp_path / "a.json"
    p.write_text('{"text": "x"}\n', encoding="utf-8")
    assert docs([p]) == ['{"text": "x"}']


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(UserError, match=r"nope\.txt: file not found"):
        docs([missing])


def test_bad_utf8_names_file_line_and_column(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_bytes(b"ok line\nab\xffcd\n")
    with pytest.raises(UserError) as info:
        docs([p])
    assert str(info.value) == f"{p}:2: not valid UTF-8 (byte 0xff at column 3)"
    assert (info.value.path, info.value.line) == (str(p), 2)


def test_bad_utf8_inside_gzip(tmp_path):
    p = tmp_path / "bad.txt.gz"
    with gzip.open(p, "wb") as fh:
        fh.write(b"fine\n\xc3\x28\n")
    with pytest.raises(UserError, match=r"bad\.txt\.gz:2: not valid UTF-8 \(byte 0xc3 at column 1\)"):
        docs([p])


def test_bad_json_names_file_and_line(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text('{"text": "ok"}\n{"text": oops}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"a\.jsonl:2: invalid JSON"):
        docs([p])


def test_missing_or_non_string_field(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text('{"text": "ok"}\n{"body": "x"}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"a\.jsonl:2: missing text field 'text'"):
        docs([p])
    q = tmp_path / "b.jsonl"
    q.write_text('{"content": 3}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"b\.jsonl:1: text field 'content' must be a string"):
        docs([q], text_field="content")
    r = tmp_path / "c.jsonl"
    r.write_text('["not", "an", "object"]\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"c\.jsonl:1: expected a JSON object"):
        docs([r])


def test_corrupt_gzip_names_file(tmp_path):
    notgz = tmp_path / "a.txt.gz"
    notgz.write_bytes(b"this is not gzip data\n")
    with pytest.raises(UserError, match=r"a\.txt\.gz: corrupt gzip file"):
        docs([notgz])
    # A truncated stream fails mid-file, after some documents were already produced.
    good = gzip.compress(("line\n" * 20000).encode())
    truncated = tmp_path / "b.txt.gz"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(UserError, match=r"b\.txt\.gz: corrupt gzip file"):
        docs([truncated])


def test_bad_options(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("x\n", encoding="utf-8")
    with pytest.raises(UserError, match="doc_sep"):
        docs([p], doc_sep="para")
    with pytest.raises(UserError, match="unknown data format"):
        docs([p], fmt="xml")


def test_streams_lazily(tmp_path):
    """The generator yields the first document before reading the bad second line."""
    p = tmp_path / "a.txt"
    p.write_bytes(b"good\n\xff\n")
    it = iter_documents([str(p)])
    assert next(it) == "good"
    with pytest.raises(UserError):
        next(it)
