"""Corpus BLEU and chrF, computed by sacrebleu itself so the numbers are its numbers.

BLEU's tokenizer follows the target language: sacrebleu's `zh` for Chinese (13a
would read a whole Chinese sentence as one word), `char` for Japanese and Korean
(sacrebleu's own choices there need MeCab), `13a` otherwise; `tokenize=` overrides.
Signatures are sacrebleu's, with `|lang:` appended.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import UserError
from .base import References, Score, check_inputs, ref_streams
from .tokenize import is_chinese, is_cjk_lang


def default_bleu_tokenizer(lang: str) -> str:
    """sacrebleu tokenizer name for a target language code."""
    if is_chinese(lang):
        return "zh"
    return "char" if is_cjk_lang(lang) else "13a"


def _signature(metric, lang: str) -> str:
    return f"{metric.get_signature().format()}|lang:{lang}"


def bleu(hypotheses: Sequence[str], references: References, lang: str = "en",
         tokenize: str | None = None) -> Score:
    """Corpus BLEU (0-100) with sacrebleu's defaults and a language-chosen tokenizer."""
    from sacrebleu.metrics import BLEU

    hyps, refs = check_inputs(hypotheses, references)
    tok = tokenize or default_bleu_tokenizer(lang)
    if tok not in BLEU.TOKENIZERS:
        raise UserError(f"unknown BLEU tokenizer {tok!r}; sacrebleu has {', '.join(BLEU.TOKENIZERS)}")
    try:
        metric = BLEU(tokenize=tok)
    except (ImportError, RuntimeError) as exc:  # e.g. ja-mecab without MeCab installed
        raise UserError(f"BLEU tokenizer {tok!r} is unavailable: {exc}") from None
    res = metric.corpus_score(hyps, ref_streams(refs))
    details = {"precisions": list(res.precisions), "bp": res.bp, "ratio": res.ratio,
               "sys_len": res.sys_len, "ref_len": res.ref_len, "counts": list(res.counts),
               "totals": list(res.totals)}
    return Score("BLEU", float(res.score), _signature(metric, lang), details)


def chrf(hypotheses: Sequence[str], references: References, lang: str = "en",
         word_order: int = 0) -> Score:
    """Corpus chrF (0-100; `word_order=2` gives chrF++). Character-based: any script works."""
    from sacrebleu.metrics import CHRF

    hyps, refs = check_inputs(hypotheses, references)
    metric = CHRF(word_order=word_order)
    res = metric.corpus_score(hyps, ref_streams(refs))
    details = {"char_order": res.char_order, "word_order": res.word_order, "beta": res.beta}
    name = "chrF++" if word_order else "chrF"
    return Score(name, float(res.score), _signature(metric, lang), details)
