"""jieba pre-segmentation of Chinese: the one segmentation transfergen uses.

BPE training and encoding (`tokenizer.py`, `jieba_tokenizer.py`) cut text into pieces
with `jieba_pieces`, and the metrics cut Chinese words with `jieba_cut`.

This file imports nothing from transfergen on purpose: a jieba tokenizer's saved folder
carries a copy of it (with `jieba_tokenizer.py`), which Hugging Face runs under
`AutoTokenizer.from_pretrained(folder, trust_remote_code=True)` where transfergen may not
be installed.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Any

# CJK unified ideographs (+ extension A, compatibility, extensions B..G). Only these runs
# go through jieba; Latin text, digits, punctuation and emoji are kept as-is.
CJK_RUN = re.compile("([\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]+)")


@functools.cache
def _jieba() -> Any:
    """Import jieba once, silencing its 'Building prefix dict...' chatter."""
    import jieba

    jieba.setLogLevel(logging.WARNING)
    return jieba


def jieba_cut(text: str) -> list[str]:
    """jieba's dictionary-only cut of `text` (HMM off: no guessed words), empty pieces dropped."""
    return [w for w in _jieba().lcut(text, HMM=False) if w]


def jieba_version() -> str:
    """The installed jieba's version (metric signatures record it)."""
    return str(_jieba().__version__)


def jieba_pieces(text: str) -> list[str]:
    """Cut `text` into pieces whose concatenation is `text`; CJK runs are jieba words."""
    pieces: list[str] = []
    # re.split with a capture group alternates [other, cjk, other, cjk, ...].
    for k, run in enumerate(CJK_RUN.split(text)):
        if not run:
            continue
        if k % 2 == 1:
            pieces.extend(jieba_cut(run))
        else:
            pieces.append(run)
    return pieces
