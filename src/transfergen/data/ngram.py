"""A word bigram language model for data selection: cheap to train, cheap to score.

Moore & Lewis (2010) score a document d of a general corpus by the cross-entropy
difference H_in(d) - H_general(d) of two language models trained on in-domain text and on
a same-sized random sample of the general corpus. Both models here share one vocabulary
(the in-domain words seen at least twice; anything else is <unk>), as Moore & Lewis do, so
an unknown word costs both models alike instead of favouring the larger vocabulary.

The model is a bigram with interpolated absolute discounting (Ney, Essen & Kneser 1994):

    p(w | v) = max(c(v, w) - D, 0) / c(v)  +  D * N1+(v .) / c(v) * p1(w)
    p1(w)    = (c(w) + 1) / (N + |V| + 1)                      (add-one unigram, <unk> included)

with p(w | v) = p1(w) for a context never seen. Every document is framed <s> ... </s>.
Words come from `metrics.tokenize.words` (jieba for Chinese): the project's one segmentation.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import pairwise

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
DISCOUNT = 0.75  # the usual absolute discount; the cross-entropy difference is insensitive to it


def vocabulary(docs_words: Iterable[Sequence[str]], min_count: int = 2) -> frozenset[str]:
    """Words seen at least `min_count` times (Moore & Lewis: the in-domain vocabulary)."""
    counts: Counter = Counter()
    for ws in docs_words:
        counts.update(ws)
    return frozenset(w for w, c in counts.items() if c >= min_count)


class BigramLM:
    """Interpolated absolute-discounting bigram over a fixed vocabulary (see module doc)."""

    def __init__(self, vocab: frozenset[str], discount: float = DISCOUNT):
        self.vocab, self.discount = vocab, discount
        self.unigrams: Counter = Counter()
        self.bigrams: Counter = Counter()
        self.context: Counter = Counter()  # c(v): how often v precedes a word
        self.followers: Counter = Counter()  # N1+(v .): distinct words after v
        self.n_docs = self.n_words = self.n_tokens = 0  # n_tokens: N, the predicted tokens

    def _map(self, ws: Sequence[str]) -> list[str]:
        return [BOS, *(w if w in self.vocab else UNK for w in ws), EOS]

    def fit(self, docs_words: Iterable[Sequence[str]]) -> BigramLM:
        """Count unigrams and bigrams of the framed documents; returns self."""
        for ws in docs_words:
            seq = self._map(ws)
            self.unigrams.update(seq[1:])
            self.n_tokens += len(seq) - 1
            for pair in pairwise(seq):
                if pair not in self.bigrams:
                    self.followers[pair[0]] += 1
                self.bigrams[pair] += 1
                self.context[pair[0]] += 1
            self.n_docs += 1
            self.n_words += len(ws)
        return self

    def logprob(self, v: str, w: str) -> float:
        """ln p(w | v) for mapped words (UNK for out-of-vocabulary ones)."""
        p1 = (self.unigrams[w] + 1) / (self.n_tokens + len(self.vocab) + 2)  # +2: <unk>, </s>
        cv = self.context[v]
        if not cv:
            return math.log(p1)
        seen = max(self.bigrams[(v, w)] - self.discount, 0.0) / cv
        return math.log(seen + self.discount * self.followers[v] / cv * p1)

    def cross_entropy(self, ws: Sequence[str]) -> tuple[float, int]:
        """(nats per predicted token, tokens predicted) of one document: its words and </s>."""
        seq = self._map(ws)
        total = math.fsum(self.logprob(v, w) for v, w in pairwise(seq))
        return -total / (len(seq) - 1), len(seq) - 1

    def perplexity(self, docs_words: Iterable[Sequence[str]]) -> float:
        """exp of the token-weighted cross-entropy over `docs_words`."""
        nats = n = 0.0
        for ws in docs_words:
            h, k = self.cross_entropy(ws)
            nats, n = nats + h * k, n + k
        return math.exp(nats / n) if n else float("nan")

    def size(self) -> dict:
        """What the model was trained on and holds: for selection.json."""
        return {"docs": self.n_docs, "words": self.n_words, "vocab": len(self.vocab) + 2,
                "bigrams": len(self.bigrams), "order": 2, "discount": self.discount}

