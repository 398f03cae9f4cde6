"""Generation metrics that can be trusted and compared with published numbers.

Every metric is `metric(hypotheses, references, lang="en", ...) -> Score`, where
`references[i]` is the list of references for `hypotheses[i]` (one or many). A `Score`
has `.score` (0-100; CIDEr-D on its own scale), `.signature` (the settings that
produced it) and `.details`.

- `bleu`, `chrf`: corpus-level, by sacrebleu (tokenizer `zh` for Chinese, else `13a`).
- `rouge`: rouge-score; ROUGE-1/2/L/Lsum in `details`, `.score` = ROUGE-L.
- `cider`: CIDEr-D in pure Python, pycocoevalcap's numbers without Java.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..errors import ConfigError, UserError
from .base import References, Score, check_inputs
from .bleu import bleu, chrf
from .cider import cider
from .rouge import ROUGE_TYPES, rouge

METRICS: dict[str, Callable[..., Score]] = {"bleu": bleu, "chrf": chrf, "rouge": rouge, "cider": cider}

__all__ = ["METRICS", "Score", "bleu", "check_metric_names", "chrf", "cider", "compute", "flatten", "rouge",
           "score_names"]


def check_metric_names(names: Sequence[str], key: str) -> None:
    """Refuse an unknown metric name at load (a typo such as 'blue' would fail only when scoring)."""
    for name in names:
        if name not in METRICS:
            raise ConfigError(f"config key '{key}': unknown metric '{name}' (known: {', '.join(METRICS)})")


def score_names(names: Sequence[str]) -> list[str]:
    """The numbers `flatten` reports for metrics `names`: each name, and ROUGE's sub-scores."""
    out = []
    for name in names:
        out += [name] + (list(ROUGE_TYPES) if name == "rouge" else [])
    return out


def compute(names: Sequence[str], hypotheses: Sequence[str], references: References, lang: str = "en",
            options: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Score]:
    """Run the named metrics; `options` gives per-metric keywords, e.g. {"bleu": {"tokenize": "char"}}."""
    unknown = [n for n in names if n not in METRICS] + [n for n in (options or {}) if n not in METRICS]
    if unknown:
        raise UserError(f"unknown metric {unknown[0]!r}; choose from {', '.join(METRICS)}")
    # Validate once up front so a bad input fails before any metric runs.
    hyps, refs = check_inputs(hypotheses, references)
    return {n: METRICS[n](hyps, refs, lang=lang, **dict((options or {}).get(n, {}))) for n in names}


def flatten(scores: Mapping[str, Score]) -> dict[str, float]:
    """{name: score} plus ROUGE's sub-scores (rouge1, rouge2, rougeL, rougeLsum) by name."""
    out: dict[str, float] = {}
    for name, s in scores.items():
        out[name] = float(s.score)
        out.update({k: float(v) for k, v in s.details.items() if k.startswith("rouge")})
    return out
