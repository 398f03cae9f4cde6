"""A study's numbers: finished runs, their curves, per-arm summaries and speed-ups.

Everything here reads files the runs and the analysis step wrote (done.json,
metrics.jsonl, test/, analysis/*.json), so a report can be rebuilt at any time, also
while some runs are still missing, without loading a model.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from .io import read_json, read_metrics
from .study.config import Run, StudyConfig, analysis_file, plan, scratch_arm


@dataclass
class RunResult:
    """A finished run: its done.json, its evaluation curve and its folder."""

    run: Run
    done: dict
    curve: list[dict]  # metrics.jsonl records with val_loss, in step order

    @property
    def arm(self) -> str:
        return self.run.arm.name


def read_curve(run_dir: Path) -> list[dict]:
    """Evaluation records (val_loss and generation metrics) of the run's latest history."""
    by_step: dict[int, dict] = {}
    for rec in read_metrics(run_dir):
        if "val_loss" in rec:
            by_step[rec["step"]] = rec  # a resumed run rewrites steps after its checkpoint
    return [by_step[s] for s in sorted(by_step)]


def collect(cfg: StudyConfig, out: Path) -> tuple[list[Run], list[RunResult]]:
    """(every planned run, the finished ones with their numbers)."""
    runs = plan(cfg, out)
    done = [RunResult(r, read_json(r.dir / "done.json"), read_curve(r.dir)) for r in runs if r.done()]
    return runs, done


def higher_is_better(metric: str) -> bool:
    return metric not in ("val_loss", "val_ppl", "test_ppl")


def _mean_curve(results: list[RunResult], key: str) -> list[tuple[int, float, float]]:
    """(step, mean FLOPs, mean value) over seeds, at steps every seed evaluated."""
    per_step: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for r in results:
        for rec in r.curve:
            if key in rec:
                per_step[rec["step"]].append((rec.get("flops", 0.0), rec[key]))
    n = len(results)
    return [(s, statistics.fmean(f for f, _ in v), statistics.fmean(x for _, x in v))
            for s, v in sorted(per_step.items()) if len(v) == n]


def steps_to_reach(curve: list[tuple[int, float, float]], target: float, higher: bool) -> tuple[int, float] | None:
    """First (step, FLOPs) at which the mean curve is at least as good as `target`."""
    for step, flops, value in curve:
        if (value >= target) if higher else (value <= target):
            return step, flops
    return None


def _spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def summarize(cfg: StudyConfig, out: Path, results: list[RunResult], metric: str) -> list[dict]:
    """One row per (size, arm): test metric spread, compute, and the speed-up against scratch."""
    pre, tests = read_analysis(out, "pretrain_cost"), read_analysis(out, "vs_scratch")
    bases = read_analysis(out, "bases")
    groups: dict[tuple, list[RunResult]] = defaultdict(list)
    for r in results:
        groups[(r.run.size, r.arm)].append(r)
    rows = []
    for (size, arm), rs in groups.items():
        scratch = groups.get((size, scratch_arm(cfg)), [])
        transfer = rs[0].run.arm.init != "scratch"
        flops = statistics.fmean(r.done["flops"] for r in rs)
        row = {"arm": arm, "size": size, "train_examples": rs[0].done.get("train_examples"),
               "test": _spread([r.done["test"].get(metric, float("nan")) for r in rs]),
               "test_ppl": statistics.fmean(r.done["test_ppl"] for r in rs),
               "trainable_params": rs[0].done.get("trainable_params"), "steps": rs[0].done["steps"],
               "flops_target": flops, 
               "flops_total": flops + (_inherited(cfg, rs[0].run, pre, bases) if transfer else 0.0),
               "train_s": statistics.fmean(r.done["train_s"] for r in rs), "transfer": transfer,
               "final_val_loss": statistics.fmean(r.curve[-1]["val_loss"] for r in rs if r.curve)}
        row.update(_speedups(rs, scratch, metric))
        row.update(_paired(tests, arm, size, scratch_arm(cfg)))
        rows.append(row)
    order = {a["name"]: i for i, a in enumerate(cfg.arms)}
    return sorted(rows, key=lambda r: (r["size"] is None, r["size"] or 0, order.get(r["arm"], 99)))


def _inherited(cfg: StudyConfig, run: Run, pre: dict | None, bases: dict | None) -> float:
    """The pretraining FLOPs a transfer run inherits: its base's, the chain it continues included."""
    if cfg.bases:
        cost = (bases or {}).get(run.arm.base or next(iter(cfg.bases)), {}).get("cost")
        return cost["total_flops"] if cost else 0.0
    return pre["flops"] if pre else 0.0


def _paired(tests: dict | None, arm: str, size, scratch: str | None) -> dict:
    """The row's paired-bootstrap comparisons: vs_scratch, vs_reference (the study's `reference`
    arm) and vs_baseline, when computed."""
    out: dict = {}
    for c in (tests or {}).get("comparisons", []):
        if c["arm"] == arm and c["size"] == size:
            key = "vs_baseline" if c.get("baseline") else "vs_scratch" if c["against"] == scratch else "vs_reference"
            out[key] = {k: c[k] for k in ("against", "delta", "ci_low", "ci_high", "p", "n_items", "seeds",
                                         "seed_deltas")}
    return out


def _speedups(rs: list[RunResult], scratch: list[RunResult], metric: str) -> dict:
    """Steps / FLOPs to reach scratch's final val loss and val metric, and the ratios."""
    out: dict = {}
    if not scratch or not all(r.curve for r in scratch + rs):
        return out
    budget_steps = scratch[0].done["steps"]
    budget_flops = statistics.fmean(r.done["flops"] for r in scratch)
    for key in ("val_loss", metric):
        target = statistics.fmean(r.curve[-1][key] for r in scratch if key in r.curve[-1]) \
            if all(key in r.curve[-1] for r in scratch) else None
        if target is None:
            continue
        curve = _mean_curve(rs, key)
        hit = steps_to_reach(curve, target, higher_is_better(key))
        trained = [step for step, _, _ in curve if step > 0]
        out[f"reach_{key}"] = None if hit is None else {
            "step": hit[0], "flops": hit[1], "target": target, "first_eval": bool(trained) and hit[0] == trained[0],
            "speedup_steps": budget_steps / hit[0] if hit[0] else None,
            "speedup_flops": budget_flops / hit[1] if hit[1] else None}
    return out


def mean_curves(results: list[RunResult], size, key: str) -> dict[str, list[tuple[int, float, float]]]:
    """arm -> mean curve of `key` at one training-set size."""
    by_arm: dict[str, list[RunResult]] = defaultdict(list)
    for r in results:
        if r.run.size == size:
            by_arm[r.arm].append(r)
    return {arm: _mean_curve(rs, key) for arm, rs in by_arm.items()}


def read_analysis(out: Path, name: str) -> dict | None:
    """What the study's analysis step wrote to OUT/analysis/NAME.json (None if absent or null)."""
    path = analysis_file(out, name)
    return read_json(path) if path.is_file() else None
