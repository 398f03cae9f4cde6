"""CIDEr-D in Python + numpy (no Java), matching pycocoevalcap's `Cider` to 1e-6.

The recipe is pycocoevalcap's `CiderScorer`: n-grams 1..4 as tf-idf vectors per order,
idf = log(N) - log(max(1, df)) with df counted over the *references of the evaluated
set* (an n-gram counts once per item) and N the number of items; per reference, the
cosine per order with hypothesis weights clipped by reference weights
(sum min(h, r) * r / (|h| |r|)), times a gaussian length penalty exp(-d^2 / 2 sigma^2);
the item score is 10 x the mean over orders and references; the corpus score is the mean.

Two quirks are kept on purpose, for parity: the "length" in the penalty is the number
of bigrams (pycocoevalcap counts it at order index 1), i.e. max(0, words - 1); and with
a single item log(N) = 0, so every weight is 0 and the score is 0 (we warn).

Speed: instead of a dict per sentence and order, every n-gram occurrence of the corpus
is one row of flat numpy arrays (sentence, n-gram id, order). N-gram ids are built
order by order from (id of the (k-1)-gram prefix, next token id) pairs, so no n-gram
string is ever formed; tf, df, norms and the clipped dot products are then np.unique,
np.bincount and one sorted intersection over (reference pair, n-gram) keys.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from itertools import chain, count

import numpy as np

from .base import References, Score, check_inputs, nrefs_label
from .tokenize import check_zh_mode, tokenizer_name, words

Arr = np.ndarray


def _token_ids(sentences: Sequence[Sequence[str]]) -> tuple[Arr, Arr]:
    """All tokens as one int array (vocabulary ids), and each sentence's length."""
    flat = list(chain.from_iterable(sentences))
    vocab = dict(zip(dict.fromkeys(flat), count()))  # first-seen order; C-level loops
    ids = np.fromiter(map(vocab.__getitem__, flat), dtype=np.int64, count=len(flat))
    lengths = np.fromiter(map(len, sentences), dtype=np.int64, count=len(sentences))
    return ids, lengths


def _occurrences(ids: Arr, lengths: Arr, n: int) -> tuple[Arr, Arr, Arr]:
    """(sentence, n-gram id) per n-gram occurrence, and the first id of each order.

    Ids of order k are offsets[k-1] .. offsets[k]-1, so orders never share an id.
    """
    sent_of_tok = np.repeat(np.arange(len(lengths)), lengths)
    end_of_tok = np.repeat(np.cumsum(lengths), lengths)  # exclusive end of its sentence
    base = int(ids.max()) + 1 if len(ids) else 1
    grams, offsets, sents, ngrams = ids, [0], [], []
    for k in range(1, n + 1):
        if k > 1:
            # The k-gram at i is the (k-1)-gram at i followed by token i+k-1. Grams that
            # cross a sentence end get ids too (by content) but are masked out below.
            _, grams = np.unique(grams[:-1] * base + ids[k - 1:], return_inverse=True)
        pos = np.flatnonzero(np.arange(len(grams)) + k <= end_of_tok[:len(grams)])
        sents.append(sent_of_tok[pos])
        ngrams.append(offsets[-1] + grams[pos])
        offsets.append(offsets[-1] + (int(grams.max()) + 1 if len(grams) else 0))
    return np.concatenate(sents), np.concatenate(ngrams), np.array(offsets)


def _idf(ref_sent: Arr, ref_gram: Arr, item_of_sent: Arr, n_grams: int, n_items: int) -> Arr:
    """log(N) - log(max(1, df)) per n-gram id; df counts items whose references have it."""
    pairs = np.sort(item_of_sent[ref_sent] * n_grams + ref_gram)
    # Sort + diff, not np.unique: numpy 2.x's hash-based unique is ~10x slower here.
    keep = np.ones(len(pairs), dtype=bool)
    keep[1:] = pairs[1:] != pairs[:-1]
    pairs = pairs[keep]
    df = np.bincount(pairs % n_grams, minlength=n_grams)
    return np.log(float(n_items)) - np.log(np.maximum(df, 1).astype(np.float64))


def _expand_to_pairs(sent: Arr, n_refs: Arr, first_pair: Arr) -> tuple[Arr, Arr]:
    """Repeat each hypothesis row once per reference of its item: (row index, pair id)."""
    reps = n_refs[sent]
    rows = np.repeat(np.arange(len(sent)), reps)
    # Position within each run of repeats: 0, 1, .., reps-1.
    within = np.arange(len(rows)) - np.repeat(np.cumsum(reps) - reps, reps)
    return rows, first_pair[sent[rows]] + within


def _pair_dots(hyp: tuple[Arr, ...], ref: tuple[Arr, ...], n_refs: Arr, n_grams: int, n: int) -> Arr:
    """sum over shared n-grams of min(h, r) * r, per (hypothesis-reference pair, order)."""
    (h_sent, h_gram, h_order, h_w), (r_pair, r_gram, r_w) = hyp, ref
    rows, h_pair = _expand_to_pairs(h_sent, n_refs, np.cumsum(n_refs) - n_refs)
    # Keys are unique on each side (one row per sentence and n-gram), so one sorted
    # intersection finds every shared n-gram of every pair at once.
    _, hi, ri = np.intersect1d(h_pair * n_grams + h_gram[rows], r_pair * n_grams + r_gram,
                               assume_unique=True, return_indices=True)
    h_val, r_val = h_w[rows[hi]], r_w[ri]
    contrib = np.minimum(h_val, r_val) * r_val
    n_pairs = int(n_refs.sum())
    dots = np.bincount(r_pair[ri] * n + h_order[rows[hi]], contrib, minlength=n_pairs * n)
    return dots.astype(np.float64).reshape(n_pairs, n)  # bincount of nothing is int


def _weighted_rows(sentences: list, item_of_sent: Arr, n_items: int, n: int) -> tuple[Arr, ...]:
    """One row per (sentence, n-gram): sentence, n-gram, order, tf-idf weight; plus the
    sentence lengths (tokens) and the number of n-gram ids."""
    ids, lengths = _token_ids(sentences)
    sent, gram, offsets = _occurrences(ids, lengths, n)
    n_grams = max(int(offsets[-1]), 1)
    keys, tf = np.unique(sent * n_grams + gram, return_counts=True)
    sent, gram = keys // n_grams, keys % n_grams
    order = np.searchsorted(offsets, gram, side="right") - 1
    is_ref = sent >= n_items
    w = tf * _idf(sent[is_ref], gram[is_ref], item_of_sent, n_grams, n_items)[gram]
    return sent, gram, order, w, lengths, n_grams


def cider_d_tokens(hyp_tokens: Sequence[Sequence[str]], ref_tokens: Sequence[Sequence[Sequence[str]]],
                   n: int = 4, sigma: float = 6.0) -> tuple[float, list[float]]:
    """CIDEr-D of tokenized input: (corpus mean, per-item scores)."""
    n_items = len(hyp_tokens)
    n_refs = np.array([len(r) for r in ref_tokens], dtype=np.int64)
    pair_item = np.repeat(np.arange(n_items), n_refs)
    sentences = [*hyp_tokens, *chain.from_iterable(ref_tokens)]  # hyps, then refs item by item
    sent, gram, order, w, lengths, n_grams = _weighted_rows(
        sentences, np.concatenate([np.arange(n_items), pair_item]), n_items, n)
    norms = np.sqrt(np.bincount(sent * n + order, w * w, minlength=len(sentences) * n).astype(np.float64))
    norms = norms.reshape(-1, n)
    h, r = sent < n_items, sent >= n_items
    dots = _pair_dots((sent[h], gram[h], order[h], w[h]), (sent[r] - n_items, gram[r], w[r]),
                      n_refs, n_grams, n)
    denom = norms[pair_item] * norms[n_items:]
    # A zero norm means a zero dot product too; pycocoevalcap then skips the division.
    cos = np.divide(dots, denom, out=np.zeros_like(dots), where=denom != 0)
    blen = np.maximum(lengths - 1, 0).astype(np.float64)  # bigram count: see module doc
    delta = blen[pair_item] - blen[n_items:]
    pair_score = cos.sum(axis=1) * np.exp(-(delta ** 2) / (2 * sigma ** 2))
    scores = 10.0 * np.bincount(pair_item, pair_score, minlength=n_items) / (n * n_refs)
    return float(np.mean(scores)), scores.tolist()


def cider(hypotheses: Sequence[str], references: References, lang: str = "en",
          zh_mode: str = "jieba", pretokenized: bool = False) -> Score:
    """Corpus CIDEr-D (n=4, sigma=6, on its own scale: roughly 0-10, often ~0.5-1.5).

    Text is tokenized by `tokenize.words` (lower-case, punctuation split off and dropped;
    jieba for Chinese); `pretokenized=True` splits on whitespace only, as pycocoevalcap
    does after its PTB tokenizer.
    """
    hyps, refs = check_inputs(hypotheses, references)
    check_zh_mode(zh_mode)
    if len(hyps) < 2:
        warnings.warn("CIDEr-D on fewer than 2 items is 0 by construction (its idf is log of the "
                      "item count); score a whole evaluation set", UserWarning, stacklevel=2)
    tok = (lambda s: s.split()) if pretokenized else (lambda s: words(s, lang, zh_mode))
    mean, per_item = cider_d_tokens([tok(h) for h in hyps], [[tok(r) for r in rs] for rs in refs])
    tok_name = "whitespace" if pretokenized else tokenizer_name(lang, zh_mode)
    sig = f"nrefs:{nrefs_label(refs)}|n:4|sigma:6|df:refs|scale:x10|tok:{tok_name}|lang:{lang}"
    return Score("CIDEr-D", mean, sig, {"n_items": len(hyps), "per_item": per_item})
