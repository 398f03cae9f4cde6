"""Compute bookkeeping of a study: what pretraining (each base) cost, and the compute-matched budget.

Both read the runs' own logs (metrics.jsonl, done.json).
"""

from __future__ import annotations

import math
from pathlib import Path

from ..config import load_yaml
from ..errors import UserError
from ..io import read_json, read_metrics
from .config import ArmConfig, Run, StudyConfig, arm_base, pretrained_dir


def last_record(run_dir: Path, key: str = "tokens") -> dict | None:
    """The last metrics.jsonl record holding `key` (None without a log)."""
    return next((rec for rec in reversed(read_metrics(run_dir)) if key in rec), None)


def pretrain_cost(folder: Path) -> dict | None:
    """{steps, tokens, flops, elapsed_s} of the pretraining run in `folder`; None if unknown
    (e.g. a checkpoint trained elsewhere). Older logs without FLOPs: tokens x 6N + attention."""
    rec = last_record(folder)
    if rec is None:
        return None
    flops = rec.get("flops")
    if not flops:
        from ..hub import load_model

        seq_len = int((load_yaml(folder / "run_config.yaml").get("train") or {}).get("seq_len", 256))
        flops = rec["tokens"] * load_model(folder).flops_per_token(seq_len)
    return {"steps": rec["step"], "tokens": rec["tokens"], "flops": float(flops), "elapsed_s": rec["elapsed_s"]}


def matched_steps(run: Run, partner_dir: Path, pre: dict | None) -> int:
    """Base steps + pretraining FLOPs / the partner scratch run's FLOPs per step (`pre["flops"]`:
    for a base that continues another, `base_costs` puts the whole chain's FLOPs there)."""
    done = read_json(partner_dir / "done.json")
    if pre is None:
        raise UserError(f"{run.id}: budget matched needs the pretraining cost, but the pretrained folder "
                        f"has no metrics.jsonl")
    per_step = done["flops"] / max(done["steps"], 1)
    return run.cfg.train.max_steps + math.ceil(pre["flops"] / per_step)


def base_costs(cfg: StudyConfig, out: Path) -> dict[str, dict | None]:
    """base name -> its own pretraining cost plus `inherited_flops` (what the base it continues
    cost, recursively) and `total_flops`; None for a base whose cost is unknown. A study
    without `bases` has one entry, ''."""
    if not cfg.bases:
        pre = pretrain_cost(pretrained_dir(cfg, out))
        return {"": pre and {**pre, "inherited_flops": 0.0, "total_flops": pre["flops"]}}
    from .bases import parse_bases

    costs: dict[str, dict | None] = {}
    for name, b in parse_bases(cfg.bases).items():  # build order: a base's init comes first
        own = pretrain_cost(pretrained_dir(cfg, out, name))
        parent = costs.get(b.init) if b.init else {"total_flops": 0.0}
        costs[name] = None if own is None or parent is None else {
            **own, "init": b.init or None, "inherited_flops": parent["total_flops"],
            "total_flops": own["flops"] + parent["total_flops"]}
    return costs


def arm_pretrain_cost(costs: dict[str, dict | None], cfg: StudyConfig, arm: ArmConfig) -> dict | None:
    """What an arm's base cost, the chain it continues included, as `matched_steps` reads it
    (`flops` = the base's total); `costs` is `base_costs(cfg, out)`."""
    cost = costs.get(arm_base(cfg, arm))
    return cost and {**cost, "flops": cost["total_flops"]}
