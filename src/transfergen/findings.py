"""What a study's numbers say, in plain sentences: the report's verdict and findings.

`verdicts` opens each training-set size with one sentence per arm against scratch, from
the paired bootstrap the analysis step wrote (`study/compare.py`): delta, 95% interval,
p-value, per-seed deltas, and how much sooner the arm reached scratch's final validation
loss; then the best arm against the trivial baseline. `findings` adds the seed-noise view
(gaps against twice the seed standard deviation) and the metric's floor.
"""

from __future__ import annotations

from .results import higher_is_better

FLOOR = 2.0  # below this (on a 0-100 metric) every output is essentially wrong


def findings(rows: list[dict], metric: str, base: dict | None, scratch_arm: str | None) -> list[str]:
    """Plain sentences: each arm against scratch, and whether the arms beat the baseline.

    A gap is "real" with >= 2 seeds per side when it exceeds twice the larger standard
    deviation over seeds. A one-seed size borrows the noise measured for the same pair of
    arms at a multi-seed size ("likely real" / "within the seed noise seen at n=..."); with
    no such measurement the report says it cannot tell.
    """
    out, scratch = [], {r["size"]: r for r in rows if r["arm"] == scratch_arm}
    better = 1 if higher_is_better(metric) else -1
    for r in rows:
        s = scratch.get(r["size"])
        if s is None or r is s:
            continue
        gap = (r["test"]["mean"] - s["test"]["mean"]) * better
        word = f"better than {s['arm']} by" if gap > 0 else f"worse than {s['arm']} by" if gap < 0 \
            else f"level with {s['arm']}:"
        out.append(f"n={r['train_examples']}: {r['arm']} is {word} {abs(gap):.2f} {metric} "
                   f"({_seed_verdict(r, s, gap, rows, scratch)}); final val loss {r['final_val_loss']:.3f} vs "
                   f"{s['final_val_loss']:.3f}.")
    if rows and higher_is_better(metric) and metric != "cider" and max(r["test"]["mean"] for r in rows) < FLOOR:
        out.append(f"Every arm scores below {FLOOR} {metric}: all are at the metric's floor, where its "
                   f"differences say little about quality, however consistent across seeds.")
    if base is not None and rows:
        b = base["scores"].get(metric, float("nan"))
        beat = [r["arm"] for r in rows if (r["test"]["mean"] - b) * better > 0]
        out.append(f"Trivial baseline ({base['label']}): {metric} {b:.2f}. "
                   + (f"Arms above it: {', '.join(sorted(set(beat)))}." if beat else "No arm beats it."))
    return out


def _seed_verdict(r: dict, s: dict, gap: float, rows: list[dict], scratch: dict) -> str:
    if min(r["test"]["n"], s["test"]["n"]) >= 2:
        return "real" if abs(gap) > 2 * max(r["test"]["std"], s["test"]["std"]) else "within seed noise"
    for other in rows:  # the same arm at a size with several seeds
        ref = scratch.get(other["size"])
        if other["arm"] == r["arm"] and ref is not None and min(other["test"]["n"], ref["test"]["n"]) >= 2:
            noise = 2 * max(other["test"]["std"], ref["test"]["std"])
            where = f"n={other['train_examples']}"
            return (f"one seed; likely real: twice the seed std at {where} is {noise:.2f}" if abs(gap) > noise
                    else f"one seed; within the seed noise seen at {where} ({noise:.2f})")
    return "one seed: training noise not measured; the verdict's interval covers the test sample only"


METRIC_NAMES = {"bleu": "BLEU", "chrf": "chrF", "cider": "CIDEr-D", "rouge": "ROUGE-L", "rouge1": "ROUGE-1",
                "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "rougeLsum": "ROUGE-Lsum"}


def _paired_text(vs: dict) -> str:
    """'+6.20 (95% CI +4.10 to +8.30, p = 0.001)'."""
    return f"{vs['delta']:+.2f} (95% CI {vs['ci_low']:+.2f} to {vs['ci_high']:+.2f}, p = {vs['p']:.3f})"


def _beyond_noise(vs: dict) -> bool:
    return vs["p"] < 0.05 and (vs["ci_low"] > 0 or vs["ci_high"] < 0)


def _reach_clause(row: dict) -> str:
    hit = row.get("reach_val_loss", "n/a")
    if hit == "n/a":
        return ""
    if hit is None:
        return "; never reached scratch's final validation loss"
    if hit["step"] == 0:
        return "; below scratch's final validation loss before any fine-tuning"
    bound = ">= " if hit.get("first_eval") else ""
    return f"; reached scratch's final validation loss {bound}{hit['speedup_steps']:.1f}x sooner"


def verdict_line(row: dict, metric: str) -> str:
    """One plain sentence: the arm against scratch on the test set, with its paired test."""
    name, vs = METRIC_NAMES.get(metric, metric), row.get("vs_scratch")
    if vs is None:
        return f"{row['arm']}: {name} {row['test']['mean']:.2f} (no scratch run to compare with)"
    word = "over" if vs["delta"] > 0 else "against"
    text = f"{row['arm']}: {name} {_paired_text(vs)} {word} {vs['against']}"
    if not _beyond_noise(vs):
        text += f": not separable from {vs['against']} on these {vs['n_items']} test items"
    if len(vs["seeds"]) > 1:
        text += f" ({len(vs['seeds'])} seeds; per seed {', '.join(f'{d:+.2f}' for d in vs['seed_deltas'])})"
    return text + _reach_clause(row)


def _baseline_line(rows: list[dict], metric: str, base: dict) -> str:
    """The best arm against the trivial baseline on the same test items."""
    name, b = METRIC_NAMES.get(metric, metric), base["scores"].get(metric, float("nan"))
    best = max(rows, key=lambda r: r["test"]["mean"] * (1 if higher_is_better(metric) else -1))
    text = f"trivial baseline ({base['label']}): {name} {b:.2f}; best arm {best['arm']} {best['test']['mean']:.2f}"
    vs = best.get("vs_baseline")
    if vs is None:
        return text
    verdict = "beats it" if _beyond_noise(vs) and vs["delta"] > 0 else \
        "is below it" if _beyond_noise(vs) else "is not separable from it"
    return f"{text}, {_paired_text(vs)}: {verdict}"


def verdicts(rows: list[dict], metric: str, base: dict | None, scratch_arm: str | None) -> dict:
    """{size label: [one sentence per non-scratch arm, then the baseline]} (a size without a
    scratch run gets only the baseline sentence)."""
    out: dict[str, list[str]] = {}
    for size in dict.fromkeys(r["size"] for r in rows):
        at = [r for r in rows if r["size"] == size]
        label = f"n={at[0]['train_examples'] or size or 'all'}"
        out[label] = [verdict_line(r, metric) for r in at if r["arm"] != scratch_arm]
        if base is not None:
            out[label].append(_baseline_line(at, metric, base))
    return out
