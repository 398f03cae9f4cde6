"""Keep a task's evaluation text out of the pretraining corpus.

A pretraining corpus often comes from the same source as the task (news bodies and the
headlines of the same articles). If the model pretrains on the articles whose headlines
it is later tested on, the comparison with scratch flatters transfer. `data.exclude`
names task YAMLs; every pretraining document that shares a word 13-gram with the
validation or test split of one of them (source or references) is left out, the
n-gram overlap test that GPT-3's contamination study used; a held-out text of 8 to 12
words (a headline, a short lead) counts when a document holds all of it. Words are
lower-cased alphanumeric runs; CJK characters count one each (Chinese has no spaces).
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

NGRAM = 13
SHORT = 8  # a held-out text of 8 to 12 words counts whole; a shorter one is no evidence
_TOKEN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\W_]+")


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


@dataclass
class HeldOut:
    """Hashed word spans of the held-out texts and the span lengths a document is checked at
    (n, plus the length of each held-out text shorter than n)."""

    grams: set[int] = field(default_factory=set)
    lengths: set[int] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.grams)


def _spans(toks: list[str], n: int) -> set[int]:
    """Hashed n-grams of a token list; SHORT to n - 1 tokens give their whole span."""
    if len(toks) < n:
        return {hash(tuple(toks))} if len(toks) >= SHORT else set()
    return {hash(tuple(toks[i:i + n])) for i in range(len(toks) - n + 1)}


def ngrams(text: str, n: int = NGRAM) -> set[int]:
    """Hashes of the word n-grams of `text`; a text of SHORT to n - 1 words gives its whole span."""
    return _spans(_tokens(text), n)


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
    """A stable fingerprint of the held-out texts and of the matching rule (a token cache
    built under another rule left out other documents); Python's own hash is salted."""
    rule = f"ngram={NGRAM} short={SHORT}\n"
    return hashlib.sha256((rule + "\n".join(texts)).encode("utf-8")).hexdigest()


def held_out_ngrams(texts: Iterable[str], n: int = NGRAM) -> HeldOut:
    """The spans of the held-out texts (hashed; used within one process only)."""
    held = HeldOut()
    for toks in map(_tokens, texts):
        grams = _spans(toks, n)
        if grams:
            held.grams |= grams
            held.lengths.add(min(n, len(toks)))
    return held


def is_contaminated(doc: str, held: HeldOut) -> bool:
    """True when the document shares a span with the held-out set: any n-gram, or the whole
    of a held-out text shorter than n (a headline or a one-sentence lead)."""
    toks = _tokens(doc)
    return any(hash(tuple(toks[i:i + k])) in held.grams
               for k in held.lengths for i in range(len(toks) - k + 1))


class Decontaminated:
    """The documents of `docs` that share no span with `held`; counts what it dropped."""

    def __init__(self, docs: Iterator[str], held: HeldOut):
        self.docs, self.held, self.dropped = docs, held, 0

    def __iter__(self) -> Iterator[str]:
        for doc in self.docs:
            if self.held and is_contaminated(doc, self.held):
                self.dropped += 1
                continue
            yield doc
