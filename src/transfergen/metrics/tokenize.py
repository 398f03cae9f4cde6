"""Language-aware word tokenisation for ROUGE and CIDEr.

`words(text, lang)` lower-cases and splits punctuation off words; CJK runs (Han, kana,
Hangul) are cut by jieba (`zh_mode="jieba"`, Chinese only) or into single characters
(`zh_mode="char"`, and always for Japanese and Korean, where jieba has no dictionary).
Punctuation tokens are dropped by default, as in the COCO caption pipeline and
rouge-score's default tokenizer, so "a dog." and "a dog" score alike.
"""

from __future__ import annotations

import re

from ..errors import UserError
from ..jieba_segment import jieba_cut, jieba_version

ZH_MODES = ("jieba", "char")
_CJK_LANGS = {"zh", "cmn", "yue", "wuu", "ja", "ko"}
_CHINESE = {"zh", "cmn", "yue", "wuu"}

# Han ideographs (+ ext. A, compatibility, ext. B..G), kana, Hangul syllables.
_CJK_RUN = re.compile("([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
                      "\U00020000-\U0003134f]+)")
# A word keeps inner apostrophes ("don't", "o'clock"); any other non-space symbol
# (ASCII or full-width "，。") is a token of its own.
_WORD = re.compile(r"\w+(?:['\u2019]\w+)*|[^\w\s]")
_IS_WORD = re.compile(r"\w")


def primary(lang: str) -> str:
    """The primary subtag: 'zh-Hans' -> 'zh', 'en_US' -> 'en'."""
    return re.split(r"[-_]", lang.strip().lower(), maxsplit=1)[0]


def is_cjk_lang(lang: str) -> bool:
    """True for Chinese (zh, cmn, yue, ...), Japanese and Korean language codes."""
    return primary(lang) in _CJK_LANGS


def is_chinese(lang: str) -> bool:
    """True for Chinese language codes (the ones jieba segments)."""
    return primary(lang) in _CHINESE


def check_zh_mode(zh_mode: str) -> None:
    if zh_mode not in ZH_MODES:
        raise UserError(f"unknown Chinese tokenisation {zh_mode!r}; choose from {', '.join(ZH_MODES)}")


def _cut_cjk(run: str, use_jieba: bool) -> list[str]:
    if use_jieba:
        # Dictionary-only cuts, the same segmentation as the project's jieba tokenizer.
        return [w for w in jieba_cut(run) if w.strip()]
    return list(run)


def words(text: str, lang: str = "en", zh_mode: str = "jieba", keep_punct: bool = False) -> list[str]:
    """Lower-cased word tokens of `text`; CJK runs cut per `zh_mode` (see module doc)."""
    check_zh_mode(zh_mode)
    use_jieba = zh_mode == "jieba" and is_chinese(lang)
    out: list[str] = []
    # re.split with a capture group alternates [other, cjk, other, cjk, ...].
    for k, run in enumerate(_CJK_RUN.split(text.lower())):
        if k % 2 == 1:
            out.extend(_cut_cjk(run, use_jieba))
        elif run:
            out.extend(_WORD.findall(run))
    if keep_punct:
        return out
    return [w for w in out if _IS_WORD.search(w)]


def tokenizer_name(lang: str, zh_mode: str) -> str:
    """How `words` treats `lang`, for signatures: 'words', 'jieba-0.42.1' or 'char'."""
    if not is_cjk_lang(lang):
        return "words"
    if zh_mode == "jieba" and is_chinese(lang):
        return f"jieba-{jieba_version()}"
    return "char"


class RougeTokenizer:
    """Adapter giving rouge-score a `tokenize(text)` method backed by `words`."""

    def __init__(self, lang: str, zh_mode: str):
        self.lang, self.zh_mode = lang, zh_mode

    def tokenize(self, text: str) -> list[str]:
        return words(text, self.lang, self.zh_mode)
