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

# docs/results.md section 4, chrF on 250 test sentences, 2 seeds, paired bootstrap (1,000
# resamples). `jsd` is each base's text against the task; deltas are against `general`.
EVIDENCE: dict = {
    "multi30k": {"jsd_general": 0.51, "jsd_selected": 0.18, "selected": (3.50, 3.07, 3.94),
                 "dapt": (1.04, 0.68, 1.38), "tapt": (0.38, 0.00, 0.74), "best_vs_scratch": 3.17},
    "tatoeba": {"jsd_general": 0.64, "jsd_selected": 0.51, "selected": (-0.30, -0.70, 0.13),
                "dapt": (-0.13, -0.59, 0.35), "tapt": (1.06, 0.63, 1.52), "best_vs_scratch": -0.99},
}


def _evidence_lines() -> list[str]:
    """What the two studies measured, as the reasons for the suggestion."""
    m, t = EVIDENCE["multi30k"], EVIDENCE["tatoeba"]
    ci = "{:+.2f} chrF (95% CI {:+.2f} to {:+.2f})".format
    return [
        "Try data selection first: `transfergen select --corpus SOURCE... --target TASK.yaml --keep 0.15`, "
        "then re-run this analysis with the selected text as --source.",
        f"  Where selection found target-like text in the pool, it paid: on Multi30k it brought the divergence "
        f"from {m['jsd_general']:.2f} to {m['jsd_selected']:.2f} and pretraining on it gave "
        f"{ci(*m['selected'])} over the general pool at equal tokens, while DAPT on the same text gave "
        f"{ci(*m['dapt'])} and TAPT {ci(*m['tapt'])}.",
        f"  Where the divergence stayed high after selection, it did not: on Tatoeba zh->en selection left "
        f"{t['jsd_selected']:.2f} (from {t['jsd_general']:.2f}) and gave {ci(*t['selected'])}, not separable; "
        f"TAPT on the task's inputs was the best remedy there, {ci(*t['tapt'])}, yet every pretrained arm "
        f"stayed below scratch (the best by {-t['best_vs_scratch']:.2f}).",
        "  So if the selected text's divergence stays above "
        f"{HIGH_JSD}, expect little from this pool: pretrain on TAPT text, or compare with scratch "
        "(`transfergen study` with a scratch arm) before spending more pretraining.",
        "  (Both studies are small: 2M-parameter models, 245,760 pretraining tokens per base, 1,000 "
        "training pairs; docs/results.md section 4.)",
    ]


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
    return ["Mismatch is high: " + "; ".join(_mismatch_lines(report)) + ".", *_evidence_lines()]
