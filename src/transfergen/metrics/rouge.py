"""ROUGE-1/2/L/Lsum via rouge-score, with a tokenizer that works for every script.

rouge-score's default tokenizer keeps only [a-z0-9], so Chinese (or Russian) text
scores 0. English (`en*`) keeps that tokenizer with Porter stemming, so its numbers
are rouge-score's; every other language uses `tokenize.words` (Chinese: jieba words
by default, characters with `zh_mode="char"`), without stemming.

Several references: per item, per ROUGE type, the reference with the best F-measure
(rouge-score's `score_multi`). Corpus figure: the plain mean of per-item F-measures,
x100 (no bootstrap, so no randomness). `.score` is ROUGE-L; `details` holds all four.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .base import References, Score, check_inputs, nrefs_label
from .tokenize import RougeTokenizer, check_zh_mode, primary, tokenizer_name

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def _scorer(lang: str, zh_mode: str):
    """rouge-score's scorer: its own tokenizer + stemmer for English, ours otherwise."""
    from rouge_score.rouge_scorer import RougeScorer

    if primary(lang) == "en":
        return RougeScorer(list(ROUGE_TYPES), use_stemmer=True), "default+porter"
    return RougeScorer(list(ROUGE_TYPES), tokenizer=RougeTokenizer(lang, zh_mode)), tokenizer_name(lang, zh_mode)


def rouge_items(hypotheses: list[str], references: list[list[str]], lang: str = "en",
                zh_mode: str = "jieba") -> dict[str, np.ndarray]:
    """Per-item F-measures (0-1) of each ROUGE type, on checked inputs: {type: (N,) array}."""
    check_zh_mode(zh_mode)
    scorer, _ = _scorer(lang, zh_mode)
    out = {key: np.zeros(len(hypotheses)) for key in ROUGE_TYPES}
    for i, (hyp, item_refs) in enumerate(zip(hypotheses, references, strict=True)):
        # score_multi(targets, prediction): rouge-score's own (reference, hypothesis) order.
        best = scorer.score_multi(item_refs, hyp)
        for key in ROUGE_TYPES:
            out[key][i] = best[key].fmeasure
    return out


def rouge(hypotheses: Sequence[str], references: References, lang: str = "en",
          zh_mode: str = "jieba") -> Score:
    """Mean per-item ROUGE F-measures (0-100); `.score` is ROUGE-L."""
    from importlib.metadata import version

    hyps, refs = check_inputs(hypotheses, references)
    items = rouge_items(hyps, refs, lang, zh_mode)
    details = {key: 100.0 * float(items[key].sum()) / len(hyps) for key in ROUGE_TYPES}
    tok = _scorer(lang, zh_mode)[1]
    sig = (f"nrefs:{nrefs_label(refs)}|types:1,2,L,Lsum|multi:max-f|agg:mean-f|tok:{tok}"
           f"|lang:{lang}|rouge_score:{version('rouge-score')}")
    return Score("ROUGE-L", details["rougeL"], sig, details)
