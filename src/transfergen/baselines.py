"""Trivial baselines that every study report shows beside the trained arms.

A reader must see whether a model beats doing (almost) nothing:
- `lead`: the first N words of the source (summarization, headlines); N defaults to the
  mean reference length of the training split, the length a good guess would have.
  Chinese has no spaces, so there N counts characters.
- `copy`: the source itself (translation; scores the overlap of names, numbers and
  cognates that a model gets for free).
`auto` picks `copy` when source and target languages differ, `lead` otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

from .config import TaskConfig
from .data.tasks import Example
from .errors import ConfigError
from .metrics.tokenize import is_cjk_lang

KINDS = ("auto", "lead", "copy", "none")


def _units(text: str, lang: str) -> list[str]:
    """Words, or characters for CJK languages (no spaces to split on)."""
    return [c for c in text if not c.isspace()] if is_cjk_lang(lang) else text.split()


def _join(units: list[str], lang: str) -> str:
    return "".join(units) if is_cjk_lang(lang) else " ".join(units)


def mean_target_length(train: Sequence[Example], lang: str) -> int:
    """Mean reference length (words; characters for CJK) over the training split, >= 1."""
    lengths = [len(_units(ex.target, lang)) for ex in train] or [1]
    return max(1, round(sum(lengths) / len(lengths)))


def resolve_kind(kind: str, task: TaskConfig) -> str:
    """`auto` -> `copy` for translation (languages differ), else `lead`."""
    if kind not in KINDS:
        raise ConfigError(f"baseline: unknown kind '{kind}' (expected one of {', '.join(KINDS)})")
    if kind != "auto":
        return kind
    return "copy" if task.source_lang != task.target_lang else "lead"


def baseline_outputs(kind: str, task: TaskConfig, train: Sequence[Example], examples: Sequence[Example],
                     lead_words: int = 0) -> tuple[str, list[str]]:
    """(label, hypotheses) of the trivial baseline for `examples`; kind must not be `none`."""
    kind = resolve_kind(kind, task)
    if kind == "copy":
        return "copy source", [ex.source for ex in examples]
    if kind == "lead":
        n = lead_words or mean_target_length(train, task.target_lang)
        unit = "characters" if is_cjk_lang(task.source_lang) else "words"
        return f"lead-{n} {unit}", [_join(_units(ex.source, task.source_lang)[:n], task.source_lang)
                                     for ex in examples]
    raise ConfigError("baseline: 'none' has no outputs")
