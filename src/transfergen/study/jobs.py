"""A study as separate jobs, for a scheduler: `--emit-commands` lists them, `--job ID` runs one.

`transfergen study STUDY.yaml --out DIR --emit-commands` prints one shell command per job,
each self-contained (`cd` to this folder, this interpreter, absolute paths, the study's
--key=value overrides), in dependency order, in waves that a comment line opens:

    # wave 1/4: pretraining                   --job pretrain (every base; only with `pretrain:` or `bases:`)
    # wave 2/4: runs (after wave 1)           --job ARM/nSIZE/sSEED: any order, all at once
    # wave 3/4: compute-matched runs, ...     each needs its same-budget scratch partner
    # wave 4/4: analysis (after wave 3)       --job analysis: baseline, domain, vs scratch

Each job does exactly what `study` does for it (`pool.build_bases`, `pool.prepare_run`
then `worker.run_one`, `analysis.analyze_study`), so after the last wave `--report-only`
writes the report `study` would have written. A job whose dependency has not finished
stops with one line (exit 2) before any work; a finished job says so and does nothing.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from ..errors import UserError
from ..folders import FolderLock, ensure_out_dir
from .config import Run, StudyConfig, plan, pretrained_dir

PRETRAIN, ANALYSIS = "pretrain", "analysis"  # job ids besides the runs' (those always hold a '/')


def waves(cfg: StudyConfig, out: Path) -> list[tuple[str, list[str]]]:
    """(title, job ids) per wave, in the order they must run; empty waves left out."""
    runs = plan(cfg, out)
    found = [("pretraining", [PRETRAIN] if _has_pretraining(cfg) else []),
             ("runs", [r.id for r in runs if r.after is None]),
             ("compute-matched runs, each after its scratch partner", [r.id for r in runs if r.after]),
             ("analysis", [ANALYSIS])]
    return [(title, ids) for title, ids in found if ids]


def job_command(study: str, out: Path, job: str, overrides: list[str]) -> str:
    """The shell line that runs `job`: absolute paths, this interpreter, the same overrides."""
    paths = [str(Path(p).resolve()) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = f"PYTHONPATH={shlex.quote(os.pathsep.join(paths))} " if paths else ""  # a source checkout's src/
    argv = [sys.executable, "-m", "transfergen", "study", str(Path(study).resolve()), "--out",
            str(out.resolve()), "--job", job, *overrides]
    return f"cd {shlex.quote(os.getcwd())} && {env}{shlex.join(argv)}"


def emit_commands(cfg: StudyConfig, study: str, out: str | Path, overrides: list[str]) -> list[str]:
    """The lines `--emit-commands` prints: a comment per wave, then its jobs' commands. Every
    run's config is checked first (`pool.check_runs`), as `study` checks it."""
    from .pool import check_runs

    out = Path(out)
    check_runs(cfg, plan(cfg, out), out, study)
    found = waves(cfg, out)
    lines = []
    for i, (title, ids) in enumerate(found, 1):
        after = f" (after wave {i - 1})" if i > 1 else ""
        lines.append(f"# wave {i}/{len(found)}: {title}{after}")
        lines += [job_command(study, out, job, overrides) for job in ids]
    return lines


def _has_pretraining(cfg: StudyConfig) -> bool:
    return bool(cfg.pretrain or cfg.bases)


def _pretraining_done(cfg: StudyConfig, out: Path) -> bool:
    """Whether every base this study builds is finished (`pool.build_bases` marks each)."""
    names = list(cfg.bases) if cfg.bases else [""] * bool(cfg.pretrain)
    return all((pretrained_dir(cfg, out, name) / "study_done").is_file() for name in names)


def _need(done: bool, job: str, what: str) -> None:
    if not done:
        raise UserError(f"job {job} needs {what} finished first (see --emit-commands for the order)")


def run_job(cfg: StudyConfig, out: str | Path, job: str) -> None:
    """Run one job of the study in this process (see the module docstring)."""
    from .analysis import analyze_study
    from .costs import arm_pretrain_cost, base_costs
    from .pool import build_bases, prepare_run
    from .worker import run_one

    out = ensure_out_dir(out)
    runs = plan(cfg, out)
    by_id = {r.id: r for r in runs}
    known = [PRETRAIN] * _has_pretraining(cfg) + list(by_id) + [ANALYSIS]
    if job not in known:
        raise UserError(f"--job {job}: no such job in this study; its jobs: {', '.join(known)}")
    if job == PRETRAIN:
        return build_bases(cfg, out)
    _need(_pretraining_done(cfg, out), job, f"job {PRETRAIN}")
    if job == ANALYSIS:
        unfinished = [r.id for r in runs if not r.done()]
        if unfinished:
            print(f"[study] analysis with {len(unfinished)} unfinished run(s): {', '.join(unfinished)}", flush=True)
        with FolderLock(out, "study"):
            return analyze_study(cfg, out)
    run: Run = by_id[job]
    if run.done():
        print(f"[study] {job} already finished", flush=True)
        return
    _need(run.after is None or by_id[run.after].done(), job, f"job {run.after}")
    prepare_run(run, cfg, out, arm_pretrain_cost(base_costs(cfg, out), cfg, run.arm), by_id)
    result = run_one(run.dir)
    shown = ", ".join(f"{k} {v:.2f}" for k, v in result["test"].items())
    print(f"[study] done {job}: test {shown}", flush=True)


def emit_or_run(cfg: StudyConfig, study: str, out: str, overrides: list[str], job: str | None) -> int:
    """`study --emit-commands` (job None: print the commands) or `study --job ID` (run it); exit 0."""
    if job is None:
        print("\n".join(emit_commands(cfg, study, out, overrides)))
    else:
        run_job(cfg, out, job)
    return 0
