"""Is system A better than system B on the same test set, beyond test-set noise?

Paired bootstrap resampling (Koehn 2004), done the sacrebleu way: per-item sufficient
statistics are computed once, then each of `n_samples` resamples draws N item indices
with replacement (the same indices for both systems), sums the statistics and scores
them. Reported:

- `delta`: score(A) - score(B) on the full test set;
- `ci_low`, `ci_high`: the 95% interval of the resampled deltas (sacrebleu's index rule:
  the (n // 40)-th smallest and largest of the sorted resamples);
- `p`: sacrebleu's two-sided p-value: how often a resampled |delta|, centred on its
  resampled mean, exceeds the observed |delta| ((count + 1) / (n + 1)).

BLEU and chrF use sacrebleu's own statistics, RNG draw and p-value, so `p` equals
`sacrebleu.significance.PairedTest(..., test_type="bs")` (tested). ROUGE-* and CIDEr-D
are means of per-item scores, so their statistic is the item score itself (CIDEr-D's
idf stays that of the full set, as the evaluated set defines it). Several seeds:
`paired_bootstrap_seeds` resamples the same test items for every seed pair and averages
the per-seed deltas, so the interval covers test-set noise around the seed-mean delta;
the seed spread itself is reported beside it, not folded in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import UserError
from .base import References, check_inputs, ref_streams
from .bleu import default_bleu_tokenizer
from .cider import cider
from .rouge import ROUGE_TYPES, rouge_items

SEED = 12345  # sacrebleu's default SACREBLEU_SEED: identical draws, identical p-values
StatsFn = Callable[[np.ndarray], np.ndarray]  # (resamples, N, k) item stats -> (resamples,) scores


@dataclass
class Paired:
    """One paired comparison: A - B with its 95% bootstrap interval and p-value."""

    metric: str
    delta: float
    ci_low: float
    ci_high: float
    p: float
    n_items: int
    n_samples: int
    seed_deltas: list[float]  # the observed delta of each seed pair (one entry for one pair)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def significant(self) -> bool:
        """p < 0.05 and the interval excludes zero (they agree except at the margin)."""
        return self.p < 0.05 and (self.ci_low > 0 or self.ci_high < 0)


def _sacrebleu_metric(metric: str, lang: str):
    from sacrebleu.metrics import BLEU, CHRF

    return BLEU(tokenize=default_bleu_tokenizer(lang)) if metric == "bleu" else CHRF()


def item_stats(metric: str, hypotheses: Sequence[str], references: References,
               lang: str = "en") -> tuple[np.ndarray, StatsFn]:
    """Per-item statistics (N, k) of `metric` and the function scoring resampled sums.

    `metric` is a study metric name: bleu, chrf, cider, rouge (= ROUGE-L) or one of
    rouge1 / rouge2 / rougeL / rougeLsum.
    """
    hyps, refs = check_inputs(hypotheses, references)
    if metric in ("bleu", "chrf"):
        # sacrebleu's sufficient statistics (n-gram matches and totals per segment); its
        # own significance module scores resamples with these same two methods.
        m = _sacrebleu_metric(metric, lang)
        stats = np.array(m._extract_corpus_statistics(hyps, ref_streams(refs)), dtype="float32")
        return stats, lambda s: np.array([m._compute_score_from_stats(row).score for row in s.sum(1)])
    if metric == "cider":
        per_item = np.array(cider(hyps, refs, lang=lang).details["per_item"])
    elif metric in ROUGE_TYPES or metric == "rouge":
        per_item = 100.0 * rouge_items(hyps, refs, lang)["rougeL" if metric == "rouge" else metric]
    else:
        raise UserError(f"no paired bootstrap for metric '{metric}' (bleu, chrf, cider, rouge, "
                        f"{', '.join(ROUGE_TYPES)})")
    return per_item[:, None], lambda s: s[..., 0].mean(1)


def _p_value(resampled: np.ndarray, observed: float) -> float:
    """sacrebleu's paired-bootstrap p: centred |resampled deltas| beyond the observed |delta|."""
    diffs = np.abs(resampled)
    if not diffs.any():  # identical outputs: sacrebleu's formula would say p = 1/(n+1)
        return 1.0
    return float((np.sum(diffs - diffs.mean() > abs(observed)) + 1) / (len(diffs) + 1))


def _interval(deltas: np.ndarray) -> tuple[float, float]:
    """sacrebleu's 95% rule on the sorted resamples: drop n // 40 from each end."""
    s, k = np.sort(deltas), len(deltas) // 40
    return float(s[k]), float(s[len(s) - k - 1])


def paired_bootstrap_seeds(metric: str, pairs: Sequence[tuple[Sequence[str], Sequence[str]]],
                           references: References, lang: str = "en", n_samples: int = 1000,
                           seed: int = SEED) -> Paired:
    """A - B over one or more seed pairs [(hyps_a, hyps_b), ...] on the same test items.

    Each resample draws one set of item indices, scores every seed's A and B on it, and
    takes the mean over seeds of A - B; with one pair this is sacrebleu's paired test.
    """
    if not pairs:
        raise UserError("paired bootstrap: no systems to compare")
    n_items = len(references)
    idx = np.random.default_rng(seed).choice(n_items, size=(n_samples, n_items), replace=True)
    observed, resampled = [], []
    for hyps_a, hyps_b in pairs:
        (sa, fa), (sb, fb) = (item_stats(metric, h, references, lang) for h in (hyps_a, hyps_b))
        full = np.arange(n_items)[None]
        observed.append(float(fa(sa[full])[0] - fb(sb[full])[0]))
        resampled.append(fa(sa[idx]) - fb(sb[idx]))
    deltas, delta = np.mean(resampled, axis=0), float(np.mean(observed))
    low, high = _interval(deltas)
    return Paired(metric, delta, low, high, _p_value(deltas, delta), n_items, n_samples, observed)


def paired_bootstrap(metric: str, hypotheses_a: Sequence[str], hypotheses_b: Sequence[str],
                     references: References, lang: str = "en", n_samples: int = 1000,
                     seed: int = SEED) -> Paired:
    """System A against system B on the same items: delta, 95% interval and p-value."""
    return paired_bootstrap_seeds(metric, [(hypotheses_a, hypotheses_b)], references, lang, n_samples, seed)
