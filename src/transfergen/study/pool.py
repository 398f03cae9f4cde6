"""Running a study's grid: each run in its own process, `workers` at once, resumable.

A finished run (done.json) is skipped and a killed one resumes from its last checkpoint,
so re-running the command continues. A compute-matched scratch run waits for its
same-budget partner, whose FLOPs per step set its budget. After the runs, `analysis.py`
writes what the report shows beside them.

The study folder is locked for the study's life (one study process per folder), every run
folder by its own process, and each child dies with the study process (PDEATHSIG, however
the parent dies), so a re-run never meets an orphan still writing a run.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..config import RunConfig, from_dict, merge, save_yaml
from ..errors import ConfigError, UserError
from ..folders import FolderLock, ensure_out_dir
from ..io import read_json, write_json_atomic
from .bases import (base_run_config, parse_bases, select_config, select_dir, task_text_file, text_owner,
                    write_task_text)
from .config import Run, StudyConfig, plan
from .costs import arm_pretrain_cost, base_costs, matched_steps

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _say(msg: str) -> None:
    print(f"[study] {msg}", flush=True)


def _die_with(parent: int) -> None:
    """In the child, before exec: the kernel sends SIGTERM when the parent dies (kill -9
    included). No-op where prctl does not exist (not Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def launch(cmd: list[str], log: Path | None = None) -> subprocess.Popen:
    """A child process that dies with this one; with a log file its output goes there."""
    parent = os.getpid()
    if log is None:
        return subprocess.Popen(cmd, preexec_fn=lambda: _die_with(parent))
    with open(log, "a", encoding="utf-8") as out:  # the child holds its own copy of the descriptor
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, preexec_fn=lambda: _die_with(parent))


def _pretrain_stage(rc: RunConfig, label: str) -> None:
    """Run one pretraining config into rc.out once (resumes if killed); marker file when done."""
    from ..checkpoint import latest_checkpoint

    folder = Path(rc.out)
    if (folder / "study_done").is_file():
        return
    rc.resume = latest_checkpoint(folder) is not None
    folder.parent.mkdir(parents=True, exist_ok=True)
    config = folder.parent / f"{folder.name}_config.yaml"
    save_yaml(rc, config)
    _say(f"{label} -> {folder}" + (" (resuming)" if rc.resume else ""))
    code = launch([sys.executable, "-m", "transfergen", "pretrain", "--config", str(config)]).wait()
    if code != 0:
        raise UserError(f"{label} failed (exit {code}); its log is above, its folder {folder}")
    (folder / "study_done").write_text("ok\n", encoding="utf-8")


def _select_stage(scfg, folder: Path, label: str) -> None:
    """Run one `transfergen select` into `folder` once (its selection.json marks it done)."""
    if (folder / "selection.json").is_file():
        return
    folder.mkdir(parents=True, exist_ok=True)
    save_yaml(scfg, folder / "select_config.yaml")
    _say(f"{label} -> {folder}")
    code = launch([sys.executable, "-m", "transfergen", "select", "--out", str(folder),
                   "--config", str(folder / "select_config.yaml")]).wait()
    if code != 0:
        raise UserError(f"{label} failed (exit {code}); its log is above")


def build_bases(cfg: StudyConfig, out: Path) -> None:
    """Every base in build order: its selection or task text, then its pretraining.
    A study without `bases` has at most its one `pretrain:` run, into OUT/pretrain."""
    if not cfg.bases:
        if cfg.pretrain:
            rc = from_dict(RunConfig, merge(cfg.pretrain, {"out": str(out / "pretrain")}), prefix="pretrain.")
            _pretrain_stage(rc, "pretraining")
        return
    bases = parse_bases(cfg.bases)
    for name, b in bases.items():
        if b.select:
            _select_stage(select_config(b, cfg.task, f"bases.{name}.select."), select_dir(out, name),
                          f"base {name}: selecting ({b.select.get('method', 'cross-entropy-difference')})")
        elif b.task_text and not task_text_file(out, name).is_file():
            n = write_task_text(cfg.task, b.task_text, task_text_file(out, name))
            _say(f"base {name}: {n:,} task {b.task_text} -> {task_text_file(out, name)}")
        what = f"continuing {b.init}" if b.init else "pretraining"
        _pretrain_stage(base_run_config(cfg.pretrain, name, bases, out), f"base {name}: {what}")


def prepare_run(run: Run, cfg: StudyConfig, out: Path, pre_cost: dict | None, by_id: dict[str, Run]) -> None:
    """Write the run's config and job files (the matched budget is known only now)."""
    if run.arm.budget == "matched" and run.after:
        run.cfg.train.max_steps = matched_steps(run, by_id[run.after].dir, pre_cost)
    run.dir.mkdir(parents=True, exist_ok=True)
    save_yaml(run.cfg, run.dir / "study_run.yaml")
    write_json_atomic(run.dir / "study_job.json", {
        "id": run.id, "arm": run.arm.name, "size": run.size, "seed": run.seed,
        "test_examples": cfg.test_examples, "analysis_texts": cfg.analysis_texts})


class _Pool:
    """Up to `workers` run processes at once; runs start when their dependency is done."""

    def __init__(self, cfg: StudyConfig, out: Path, runs: list[Run]):
        self.cfg, self.out, self.n = cfg, out, len(runs)
        self.by_id = {r.id: r for r in runs}
        self.todo = [r for r in runs if not r.done()]
        self.active: dict[str, tuple[Run, subprocess.Popen, float]] = {}
        self.failed: list[str] = []
        self.costs = base_costs(cfg, out)  # each base's FLOPs, the chain it continues included

    def start_ready(self) -> None:
        """Drop runs whose dependency failed; start ready ones while workers are free."""
        for r in [r for r in self.todo if r.after in self.failed]:
            self.todo.remove(r)
            self.failed.append(r.id)
            _say(f"skip {r.id}: {r.after} failed")
        ready = [r for r in self.todo if r.after is None or self.by_id[r.after].done()]
        while ready and len(self.active) < self.cfg.workers:
            r = ready.pop(0)
            self.todo.remove(r)
            prepare_run(r, self.cfg, self.out, arm_pretrain_cost(self.costs, self.cfg, r.arm), self.by_id)
            _say(f"[{self.n - len(self.todo) - len(self.active)}/{self.n}] start {r.id} "
                 f"({r.cfg.train.max_steps} steps)")
            log = r.dir / "log.txt" if self.cfg.workers > 1 else None
            proc = launch([sys.executable, "-m", "transfergen.study.worker", str(r.dir)], log)
            self.active[r.id] = (r, proc, time.time())

    def reap(self) -> None:
        """Report every finished process: its test scores, or where its log is."""
        for rid, (r, proc, t0) in list(self.active.items()):
            if proc.poll() is None:
                continue
            del self.active[rid]
            if proc.returncode == 0 and r.done():
                res = read_json(r.dir / "done.json")
                shown = ", ".join(f"{k} {v:.2f}" for k, v in res["test"].items())
                _say(f"done {rid} in {time.time() - t0:.0f} s: test {shown}")
            else:
                self.failed.append(rid)
                where = r.dir / "log.txt" if self.cfg.workers > 1 else "above"
                _say(f"FAILED {rid} (exit {proc.returncode}); see {where}")


def _base_checks(cfg: StudyConfig, out: Path) -> list[tuple[str, RunConfig, str]]:
    """The pretraining configs to check: the one `pretrain:`, or each base's. A base whose corpus
    the study derives is checked on what it derives from (the selection's corpus, the task's text)."""
    if not cfg.bases:
        return [("pretrain", from_dict(RunConfig, merge(cfg.pretrain, {"out": str(out / "pretrain")}),
                                       prefix="pretrain."), "pretrain")] if cfg.pretrain else []
    from ..select import check_select

    checks = []
    bases = parse_bases(cfg.bases)
    for name in bases:
        rc, owner = base_run_config(cfg.pretrain, name, bases, out), text_owner(bases, name)
        src = bases[owner]
        if src.select:
            scfg = select_config(src, cfg.task, f"bases.{owner}.select.")
            check_select(scfg)
            rc.data.corpus, rc.data.format, rc.data.text_field = scfg.corpus, scfg.format, scfg.text_field
        elif src.task_text and not task_text_file(out, owner).is_file():
            write_task_text(cfg.task, src.task_text, task_text_file(out, owner))  # cheap; its stage reuses it
        checks.append((f"bases.{name}", rc, "pretrain"))
    return checks


def check_runs(cfg: StudyConfig, runs: list[Run], out: Path, source: str | None = None) -> None:
    """What `load_study` cannot check without torch, for one run per arm and every pretraining
    config: strategy names, the device and dtype, the folders read. Errors name `source`."""
    from ..preflight import check_run  # torch: never imported for a report

    checks = _base_checks(cfg, out) + [(f"arm '{r.arm.name}'", r.cfg, "finetune")
                                       for r in {r.arm.name: r for r in runs}.values()]
    for what, rc, command in checks:
        # A folder the study makes first (a base, the one it continues) is checked once it exists.
        made = [f for f in (rc.init, rc.model.like) if f and f != "scratch"]
        try:
            check_run(rc, command, folders=all(Path(f).is_dir() for f in made))
        except UserError as exc:
            raise ConfigError(f"{what}: {exc}", path=source) from None


def run_study(cfg: StudyConfig, out: str | Path, source: str | None = None) -> list[str]:
    """Run every unfinished run (`workers` at once), then the study's analysis (the JSON the
    report renders); returns the ids of failed runs. `source` (the study file) is named in errors."""
    out = ensure_out_dir(out)
    with FolderLock(out, "study"):
        runs = plan(cfg, out)
        check_runs(cfg, runs, out, source)  # everything is checked before the first process starts
        build_bases(cfg, out)
        pool = _Pool(cfg, out, runs)
        _say(f"{len(runs)} runs ({len(runs) - len(pool.todo)} already finished), {cfg.workers} at a time -> {out}")
        while pool.todo or pool.active:
            pool.start_ready()
            time.sleep(0.2)
            pool.reap()
        from .analysis import analyze_study  # loads models: only after the runs, never for a report

        analyze_study(cfg, out)
    return pool.failed
