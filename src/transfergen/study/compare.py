"""Each arm against scratch (and the trivial baseline) on the same test items, beyond noise?

For every training-set size and every arm other than the plain scratch arm, the paired
bootstrap (`metrics.significance`) compares the arm's test outputs with scratch's, seed
by seed (seed s of the arm against seed s of scratch, the same test items), 1,000
resamples of the test items shared by every seed pair. With several seeds the per-seed
deltas are kept too, so the seed spread stays visible beside the test-set interval.
The best arm per size is also compared with the trivial baseline's outputs, and, when the
study names a `reference` arm (e.g. general pretraining), every other arm with it too.

Reads only what the runs wrote (test/predictions.jsonl) and analysis/baseline.json;
writes analysis/vs_scratch.json for the report.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..io import read_json
from ..metrics.significance import paired_bootstrap_seeds
from .config import Run, StudyConfig, analysis_file, headline_metric, plan, scratch_arm

N_SAMPLES = 1000


def _predictions(run: Run) -> tuple[list[str], list[list[str]]]:
    """(hypotheses, references) a finished run decoded on the test split."""
    lines = (run.dir / "test" / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(ln) for ln in lines if ln.strip()]
    return [r["hypothesis"] for r in rows], [r["references"] for r in rows]


def _finished(runs: list[Run], arm: str, size) -> dict[int, Run]:
    return {r.seed: r for r in runs if r.arm.name == arm and r.size == size and r.done()}


def compare(metric: str, lang: str, mine: dict[int, Run], theirs: dict[int, Run] | list[str]) -> dict | None:
    """Paired bootstrap of `mine` against scratch runs (matched by seed) or fixed outputs."""
    seeds = sorted(mine) if isinstance(theirs, list) else sorted(set(mine) & set(theirs))
    if not seeds:
        return None
    pairs, refs = [], None
    for s in seeds:
        hyps, refs = _predictions(mine[s])
        other = theirs if isinstance(theirs, list) else _predictions(theirs[s])[0]
        pairs.append((hyps, other[:len(hyps)]))
    return {**paired_bootstrap_seeds(metric, pairs, refs, lang, N_SAMPLES).to_dict(), "seeds": seeds}


def compare_arms(cfg: StudyConfig, out: Path) -> dict:
    """{metric, comparisons: [{arm, size, against, delta, ci_low, ci_high, p, ...}]}."""
    from ..data.tasks import load_task_file

    metric, runs, ref = headline_metric(cfg), plan(cfg, out), scratch_arm(cfg)
    lang = load_task_file(cfg.task).target_lang
    base_file = analysis_file(out, "baseline")
    base = read_json(base_file) if base_file.is_file() else None
    found = []
    for size in cfg.sizes:
        scratch = _finished(runs, ref, size) if ref else {}
        other = cfg.reference  # e.g. general pretraining, against which selection and DAPT are judged
        other_runs = _finished(runs, other, size) if other else {}
        for arm in dict.fromkeys(r.arm.name for r in runs):
            mine = _finished(runs, arm, size)
            if arm != ref and scratch and (res := compare(metric, lang, mine, scratch)):
                found.append({"arm": arm, "size": size, "against": ref, "baseline": False, **res})
            if arm not in (ref, other) and other_runs and (res := compare(metric, lang, mine, other_runs)):
                found.append({"arm": arm, "size": size, "against": other, "baseline": False, **res})
            if base and base.get("outputs") and (res := compare(metric, lang, mine, base["outputs"])):
                found.append({"arm": arm, "size": size, "against": base["label"], "baseline": True, **res})
    return {"metric": metric, "n_samples": N_SAMPLES, "comparisons": found}
