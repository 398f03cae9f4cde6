"""Keep a task's evaluation text out of the pretraining corpus.

A pretraining corpus often comes from the same source as the task (news bodies and the
headlines of the same articles). If the model pretrains on the articles whose headlines
it is later tested on, the comparison with scratch flatters transfer. `data.exclude`
names task YAMLs; every pretraining document that shares a word 13-gram with the
validation or test split of one of them (source or references) is left out, the
n-gram overlap test that GPT-3's contamination study used. Words are lower-cased
alphanumeric runs; CJK characters count one each, since Chinese has no spaces.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable, Iterator

NGRAM = 13
_TOKEN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\W_]+")


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def ngrams(text: str, n: int = NGRAM) -> set[int]:
    """Hashes of the word n-grams of `text` (texts shorter than n give their whole span)."""
    toks = _tokens(text)
    if len(toks) < n:
        return {hash(tuple(toks))} if len(toks) >= 4 else set()  # a very short text is no evidence
    return {hash(tuple(toks[i:i + n])) for i in range(len(toks) - n + 1)}


@functools.cache
def held_out_texts(task_files: tuple[str, ...]) -> list[str]:
    """Every validation and test source and reference of the tasks, sorted (a stable set);
    cached, since the tokenizer and the token cache of one run both ask."""
    from .tasks import load_task, load_task_file

    texts: set[str] = set()
    for path in task_files:
        data = load_task(load_task_file(path))
        for ex in data.val + data.test:
            texts.update((ex.source, *ex.references))
    return sorted(texts)


def digest(texts: list[str]) -> str:
    """A stable fingerprint of the held-out texts (Python's own hash is salted per process)."""
    return hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()


def held_out_ngrams(texts: Iterable[str], n: int = NGRAM) -> set[int]:
    """The n-grams of the held-out texts (hashed; used within one process only)."""
    grams: set[int] = set()
    for text in texts:
        grams |= ngrams(text, n)
    return grams


def is_contaminated(doc: str, grams: set[int], n: int = NGRAM) -> bool:
    """True when the document shares any n-gram with the held-out set."""
    toks = _tokens(doc)
    return any(hash(tuple(toks[i:i + n])) in grams for i in range(len(toks) - n + 1))


class Decontaminated:
    """The documents of `docs` that share no n-gram with `grams`; counts what it dropped."""

    def __init__(self, docs: Iterator[str], grams: set[int], n: int = NGRAM):
        self.docs, self.grams, self.n, self.dropped = docs, grams, n, 0

    def __iter__(self) -> Iterator[str]:
        for doc in self.docs:
            if self.grams and is_contaminated(doc, self.grams, self.n):
                self.dropped += 1
                continue
            yield doc
