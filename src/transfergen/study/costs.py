"""Compute bookkeeping of a study: what pretraining cost, and the compute-matched budget.

Both read the runs' own logs (metrics.jsonl, done.json).
"""

from __future__ import annotations

import math
from pathlib import Path

from ..config import load_yaml
from ..errors import UserError
from ..io import read_json, read_metrics
from .config import Run


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
    """Base steps + pretraining FLOPs / the partner scratch run's FLOPs per step."""
    done = read_json(partner_dir / "done.json")
    if pre is None:
        raise UserError(f"{run.id}: budget matched needs the pretraining cost, but the pretrained folder "
                        f"has no metrics.jsonl")
    per_step = done["flops"] / max(done["steps"], 1)
    return run.cfg.train.max_steps + math.ceil(pre["flops"] / per_step)
