"""`transfergen study STUDY.yaml --out DIR`: arms x training-set sizes x seeds, same budget.

    task: configs/tasks/multi30k_en_de.yaml
    pretrained: runs/pretrain-en-de        # or `pretrain:` a pretraining run config
    base: {train: {max_steps: 300, lr: 1e-3}, eval: {examples: 100}}
    arms:
      - {name: scratch, init: scratch}
      - {name: full}
      - {name: lora, strategy: {name: lora, lora_lr: 3e-3}}
      - {name: scratch-matched, init: scratch, budget: matched}
    sizes: [1000, 5000]
    seeds: [0, 1, 2]
    seed_sizes: [1000]                     # every seed here, seeds[0] elsewhere

Every run is one `finetune` (the same loop, same model shape, tokenizer, decoding and step
budget; `init` is the only difference between scratch and transfer), then a test-split
evaluation and, for transfer arms, the layer analysis; its folder gets `done.json` last.
Runs execute as separate processes (`workers` at once); a finished run is skipped and
a killed one resumes from its last checkpoint, so re-running the command continues.

Scratch arms borrow the pretrained model's tokenizer and shape (`model.like`), so the
comparison measures the initial weights alone. `budget: matched` gives a scratch arm
the pretraining compute on top: extra steps = pretraining FLOPs / FLOPs per step of the
same-size, same-seed `budget: same` scratch run (it waits for that run).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import RunConfig, build_config, from_dict, load_yaml, merge, save_yaml, to_dict
from .data.tasks import load_task_file
from .errors import ConfigError, UserError
from .io import read_metrics, write_json_atomic


@dataclass
class ArmConfig:
    """One arm: how its runs start and which strategy they train with."""

    name: str = ""
    init: str = "pretrained"  # pretrained | scratch
    strategy: dict = field(default_factory=dict)  # strategy.* for this arm
    train: dict = field(default_factory=dict)  # train.* for this arm (not the budget)
    budget: str = "same"  # same | matched (scratch: + the pretraining compute)


@dataclass
class StudyConfig:
    """The grid and what every run shares; YAML keys mirror these fields."""

    name: str = "study"
    task: str = ""  # a task YAML
    pretrained: str = ""  # model folder the transfer arms start from
    pretrain: dict = field(default_factory=dict)  # or: a pretraining RunConfig run into <out>/pretrain
    base: dict = field(default_factory=dict)  # RunConfig keys shared by every fine-tuning run
    arms: list[dict] = field(default_factory=list)  # ArmConfig mappings
    sizes: list[int | None] = field(default_factory=lambda: [None])  # None / null = all
    seeds: list[int] = field(default_factory=lambda: [0])
    seed_sizes: list[int | None] = field(default_factory=list)  # sizes with every seed; empty = all
    workers: int = 1  # runs at once (separate processes, cores shared out)
    metric: str = ""  # headline metric (e.g. rouge1, bleu); default: the task's first
    test_examples: int | None = 500  # test examples decoded per run (None = all)
    baseline: str = "auto"  # auto | lead | copy | none
    lead_words: int = 0  # lead-N baseline; 0 = mean reference length
    samples: int = 8  # rows in the report's sample table
    analysis_texts: int = 32  # target inputs for CKA / attention
    note: str = ""  # a caveat the report prints under its introduction


@dataclass
class Run:
    """One cell of the grid."""

    arm: ArmConfig
    size: int | None
    seed: int
    dir: Path
    cfg: RunConfig
    after: str | None = None  # id of the run whose cost this one needs (matched budget)

    @property
    def id(self) -> str:
        return f"{self.arm.name}/n{self.size or 'all'}/s{self.seed}"

    def done(self) -> bool:
        return (self.dir / "done.json").is_file()


def load_study(path: str, overrides: dict | None = None) -> StudyConfig:
    """Read STUDY.yaml (+ --key=value overrides) and check the arms; errors name the key."""
    try:
        cfg = build_config(StudyConfig, [path], overrides or {})
    except ConfigError as exc:
        if exc.path is not None:  # YAML syntax: already names file and line
            raise
        raise ConfigError(str(exc), path=path) from None
    if not cfg.task:
        raise ConfigError("study: 'task' is required (a task YAML)", path=path)
    if not cfg.arms:
        raise ConfigError("study: 'arms' is empty", path=path)
    if bool(cfg.pretrained) == bool(cfg.pretrain):
        raise ConfigError("study: give exactly one of 'pretrained' (a folder) and 'pretrain' (a run config)",
                          path=path)
    if cfg.workers < 1:
        raise ConfigError(f"study: 'workers' must be >= 1, got {cfg.workers}", path=path)
    return cfg


def arms(cfg: StudyConfig) -> list[ArmConfig]:
    """Validated ArmConfigs: unique names, known init/budget, no per-arm step budget."""
    out = [from_dict(ArmConfig, a, prefix=f"arms[{i}].") for i, a in enumerate(cfg.arms)]
    names = [a.name for a in out]
    for i, a in enumerate(out):
        where = f"arms[{i}] ({a.name or 'unnamed'})"
        if not a.name or "/" in a.name or names.count(a.name) > 1:
            raise ConfigError(f"{where}: every arm needs a unique name without '/'")
        if a.init not in ("pretrained", "scratch"):
            raise ConfigError(f"{where}: init must be 'pretrained' or 'scratch', got '{a.init}'")
        if a.budget not in ("same", "matched") or (a.budget == "matched" and a.init != "scratch"):
            raise ConfigError(f"{where}: budget must be 'same', or 'matched' for a scratch arm")
        if {"max_steps", "max_minutes"} & set(a.train):
            raise ConfigError(f"{where}: the step budget is shared (base.train.max_steps); "
                              f"use budget: matched for a compute-matched arm")
    if any(a.budget == "matched" for a in out) and not any(a.init == "scratch" and a.budget == "same" for a in out):
        raise ConfigError("arms: a 'budget: matched' arm needs a plain scratch arm to measure FLOPs per step")
    return out


def scratch_arm(cfg: StudyConfig) -> str | None:
    """The name of the plain scratch arm (same budget): the reference for speed-ups."""
    return next((a.name for a in arms(cfg) if a.init == "scratch" and a.budget == "same"), None)


def pretrained_dir(cfg: StudyConfig, out: Path) -> Path:
    return Path(cfg.pretrained) if cfg.pretrained else out / "pretrain"


def plan(cfg: StudyConfig, out: Path) -> list[Run]:
    """Every run's resolved RunConfig, validated before anything trains; matched arms last."""
    task = to_dict(load_task_file(cfg.task))
    if cfg.pretrained and not Path(cfg.pretrained).is_dir():
        raise UserError(f"study: pretrained model folder '{cfg.pretrained}' not found")
    pre = str(pretrained_dir(cfg, out).resolve())
    runs: list[Run] = []
    ordered = sorted(arms(cfg), key=lambda a: a.budget == "matched")  # validated once
    plain_scratch = scratch_arm(cfg)
    for size in cfg.sizes:
        seeds = cfg.seeds if not cfg.seed_sizes or size in cfg.seed_sizes else cfg.seeds[:1]
        for seed in seeds:
            for arm in ordered:
                rdir = out / "runs" / arm.name / f"n{size or 'all'}" / f"s{seed}"
                runs.append(Run(arm, size, seed, rdir, _run_config(cfg, arm, task, pre, size, seed, rdir)))
                if arm.budget == "matched" and plain_scratch is not None:
                    runs[-1].after = f"{plain_scratch}/n{size or 'all'}/s{seed}"
    return runs


def _run_config(cfg: StudyConfig, arm: ArmConfig, task: dict, pre: str, size: int | None, seed: int,
                rdir: Path) -> RunConfig:
    """base <- task <- arm <- (size, seed, folder); scratch arms copy the pretrained shape."""
    data = merge({"eval": {"generate": True, "examples": 100}, "train": {"eval_at_start": True}}, cfg.base)
    data = merge(data, {"task": merge(task, cfg.base.get("task", {}))})
    data = merge(data, {"strategy": arm.strategy, "train": merge(arm.train, {"max_examples": size, "seed": seed})})
    if arm.init == "scratch":
        data = merge(data, {"init": "scratch", "model": {"like": pre}, "tokenizer": {"path": pre}})
    else:
        data["init"] = pre
    if cfg.workers > 1 and data.get("train", {}).get("threads") is None:
        data["train"]["threads"] = max(1, (os.cpu_count() or 1) // cfg.workers)
    data["out"] = str(rdir)
    try:
        return from_dict(RunConfig, data)
    except ConfigError as exc:
        raise ConfigError(f"arm '{arm.name}': {exc}") from None


# ---------------------------------------------------------------------------
# compute bookkeeping


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
        from .hub import load_model

        seq_len = int((load_yaml(folder / "run_config.yaml").get("train") or {}).get("seq_len", 256))
        flops = rec["tokens"] * load_model(folder).flops_per_token(seq_len)
    return {"steps": rec["step"], "tokens": rec["tokens"], "flops": float(flops), "elapsed_s": rec["elapsed_s"]}


def matched_steps(run: Run, partner_dir: Path, pre: dict | None) -> int:
    """Base steps + pretraining FLOPs / the partner scratch run's FLOPs per step."""
    done = json.loads((partner_dir / "done.json").read_text(encoding="utf-8"))
    if pre is None:
        raise UserError(f"{run.id}: budget matched needs the pretraining cost, but the pretrained folder "
                        f"has no metrics.jsonl")
    per_step = done["flops"] / max(done["steps"], 1)
    return run.cfg.train.max_steps + math.ceil(pre["flops"] / per_step)


# ---------------------------------------------------------------------------
# one run, in its own process: python -m transfergen.study RUN_DIR


def run_one(run_dir: Path) -> dict:
    """Fine-tune (resuming), evaluate on test, analyse layers; write done.json last."""
    from .checkpoint import latest_checkpoint
    from .evaluate import run_evaluate
    from .finetune import run_finetune
    from .metrics import flatten
    from .metrics.base import Score

    job = json.loads((run_dir / "study_job.json").read_text(encoding="utf-8"))
    cfg = build_config(RunConfig, [str(run_dir / "study_run.yaml")])
    cfg.resume = latest_checkpoint(run_dir) is not None
    state = run_finetune(cfg)
    t0 = time.perf_counter()
    test = run_evaluate(str(run_dir), cfg.task, "test", str(run_dir / "test"), cfg.eval, limit=job["test_examples"])
    scores = flatten({k: Score(**v) for k, v in test["scores"].items()})
    setup = _setup_record(run_dir)
    if cfg.init != "scratch":
        _layer_analysis(Path(cfg.init), run_dir, cfg, job["analysis_texts"])
    result = {"id": job["id"], "arm": job["arm"], "size": job["size"], "seed": job["seed"],
              "steps": state["step"], "tokens": state["tokens"], "flops": state.get("flops", 0.0),
              "train_s": round(state["elapsed_s"], 1), "test_s": round(time.perf_counter() - t0, 1),
              "train_examples": setup.get("train_examples"), "trainable_params": setup.get("trainable_params"),
              "frozen_params": setup.get("frozen_params"), "test": scores, "test_ppl": test["perplexity"],
              "test_n": test["n"]}
    _write_json(run_dir / "done.json", result)
    return result


def _setup_record(run_dir: Path) -> dict:
    return next((rec for rec in read_metrics(run_dir) if rec.get("event") == "setup"), {})


def _layer_analysis(pretrained: Path, run_dir: Path, cfg: RunConfig, n: int) -> None:
    """layers.json: weight change and CKA against the pretrained model on target inputs."""
    from .analysis.layers import layer_report
    from .data.tasks import load_task

    texts = [ex.source for ex in load_task(cfg.task).test[:n]]
    _write_json(run_dir / "layers.json", layer_report(str(pretrained), str(run_dir), texts))


def _write_json(path: Path, obj: dict) -> None:
    write_json_atomic(path, obj)


# ---------------------------------------------------------------------------
# the grid: processes, resume, order


def _say(msg: str) -> None:
    print(f"[study] {msg}", flush=True)


def _launch(cmd: list[str], log: Path | None) -> subprocess.Popen:
    """A child process; with a log file its output goes there, else to our terminal."""
    if log is None:
        return subprocess.Popen(cmd)
    with open(log, "a", encoding="utf-8") as out:  # the child holds its own copy of the descriptor
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)


def _pretrain(cfg: StudyConfig, out: Path) -> None:
    """Run `pretrain:` into <out>/pretrain once (resumes if killed); marker file when done."""
    from .checkpoint import latest_checkpoint

    folder = out / "pretrain"
    if not cfg.pretrain or (folder / "study_done").is_file():
        return
    rc = from_dict(RunConfig, merge(cfg.pretrain, {"out": str(folder)}), prefix="pretrain.")
    rc.resume = latest_checkpoint(folder) is not None
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(rc, out / "pretrain_config.yaml")
    _say(f"pretraining -> {folder}" + (" (resuming)" if rc.resume else ""))
    code = subprocess.call([sys.executable, "-m", "transfergen", "pretrain", "--config",
                            str(out / "pretrain_config.yaml")])
    if code != 0:
        raise UserError(f"pretraining failed (exit {code}); its log is above, its folder {folder}")
    (folder / "study_done").write_text("ok\n", encoding="utf-8")


def _prepare(run: Run, cfg: StudyConfig, out: Path, pre_cost: dict | None, by_id: dict[str, Run]) -> None:
    """Write the run's config and job files (the matched budget is known only now)."""
    if run.arm.budget == "matched" and run.after:
        run.cfg.train.max_steps = matched_steps(run, by_id[run.after].dir, pre_cost)
    run.dir.mkdir(parents=True, exist_ok=True)
    save_yaml(run.cfg, run.dir / "study_run.yaml")
    _write_json(run.dir / "study_job.json", {
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
        self.pre_cost = pretrain_cost(pretrained_dir(cfg, out))

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
            _prepare(r, self.cfg, self.out, self.pre_cost, self.by_id)
            _say(f"[{self.n - len(self.todo) - len(self.active)}/{self.n}] start {r.id} "
                 f"({r.cfg.train.max_steps} steps)")
            log = r.dir / "log.txt" if self.cfg.workers > 1 else None
            proc = _launch([sys.executable, "-m", "transfergen.study", str(r.dir)], log)
            self.active[r.id] = (r, proc, time.time())

    def reap(self) -> None:
        """Report every finished process: its test scores, or where its log is."""
        for rid, (r, proc, t0) in list(self.active.items()):
            if proc.poll() is None:
                continue
            del self.active[rid]
            if proc.returncode == 0 and r.done():
                res = json.loads((r.dir / "done.json").read_text(encoding="utf-8"))
                shown = ", ".join(f"{k} {v:.2f}" for k, v in res["test"].items())
                _say(f"done {rid} in {time.time() - t0:.0f} s: test {shown}")
            else:
                self.failed.append(rid)
                where = r.dir / "log.txt" if self.cfg.workers > 1 else "above"
                _say(f"FAILED {rid} (exit {proc.returncode}); see {where}")


def run_study(cfg: StudyConfig, out: str | Path) -> list[str]:
    """Run every unfinished run (`workers` at once); returns the ids of failed runs."""
    out = Path(out)
    runs = plan(cfg, out)  # validates everything before the first process starts
    _pretrain(cfg, out)
    pool = _Pool(cfg, out, runs)
    _say(f"{len(runs)} runs ({len(runs) - len(pool.todo)} already finished), {cfg.workers} at a time -> {out}")
    while pool.todo or pool.active:
        pool.start_ready()
        time.sleep(0.2)
        pool.reap()
    return pool.failed


if __name__ == "__main__":  # the per-run worker process
    from .errors import EXIT_USER_ERROR

    try:
        run_one(Path(sys.argv[1]))
    except UserError as exc:
        print(f"transfergen: error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
