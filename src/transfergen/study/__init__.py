"""`transfergen study STUDY.yaml --out DIR`: a pipeline of plan, runs, analysis and report.

    config.py    StudyConfig and the plan: every run's resolved RunConfig, checked first
    pool.py      the runs, each in its own process (worker.py), resumable
    analysis.py  after the runs: trivial baseline, domain mismatch, pretraining cost (JSON)
    jobs.py      the same as separate jobs for a scheduler (--emit-commands, --job ID)
    ../results.py, ../report.py   read those files and render them; no model is loaded

Split by job so that the report, which reads files only, imports no torch.
"""

from __future__ import annotations

from .config import ArmConfig, Run, StudyConfig, arms, load_study, plan, pretrained_dir, scratch_arm
from .costs import matched_steps, pretrain_cost
from .pool import run_study

__all__ = ["ArmConfig", "Run", "StudyConfig", "arms", "load_study", "matched_steps", "plan", "pretrain_cost",
           "pretrained_dir", "run_study", "scratch_arm"]
