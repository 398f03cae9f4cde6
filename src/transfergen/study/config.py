"""A study's configuration and plan: arms x training-set sizes x seeds, one budget.

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
budget; `init` is the only difference between scratch and transfer). `load_study` checks
the whole file before anything trains (every key's range, the task and its metrics, the
headline metric, the arms, every run's resolved config), each error naming the study file.
How they run is `pool.py` and `worker.py`, what is computed after them `analysis.py`; the
report only reads what those wrote.

Scratch arms borrow the pretrained model's tokenizer and shape (`model.like`), so the
comparison measures the initial weights alone. `budget: matched` gives a scratch arm
the pretraining compute on top: extra steps = pretraining FLOPs / FLOPs per step of the
same-size, same-seed `budget: same` scratch run (it waits for that run).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..baselines import KINDS
from ..checks import at_least, each, one_of
from ..config import RunConfig, TaskConfig, build_config, from_dict, merge, opt, to_dict
from ..data.tasks import check_task_config, load_task_file
from ..errors import ConfigError, UserError


@dataclass
class ArmConfig:
    """One arm: how its runs start and which strategy they train with."""

    name: str = opt("", "unique, without '/'")
    init: str = opt("pretrained", "pretrained | scratch")
    strategy: dict = opt(doc="strategy.* for this arm", factory=dict)
    train: dict = opt(doc="train.* for this arm (not the step budget)", factory=dict)
    budget: str = opt("same", "same | matched (scratch: + the pretraining compute as extra steps)")
    base: str = opt("", "the base (bases: NAME) it starts from, or whose tokenizer and shape scratch copies; "
                        "default: the first")


@dataclass
class StudyConfig:
    """The grid and what every run shares; YAML keys mirror these fields."""

    name: str = opt("study", "the report's title")
    task: str = opt("", "a task YAML")
    pretrained: str = opt("", "model folder the transfer arms start from")
    pretrain: dict = opt(doc="or: a pretraining RunConfig, run into <out>/pretrain first (with bases: "
                             "the keys every base shares)", factory=dict)
    bases: dict = opt(doc="or: named bases the study builds, {NAME: {init, select, task_text, pretrain}} "
                          "(study/bases.py)", factory=dict)
    reference: str = opt("", "an arm every other arm is also compared with (paired bootstrap), beside scratch")
    base: dict = opt(doc="RunConfig keys every fine-tuning run shares, e.g. base.train.max_steps", factory=dict)
    arms: list[dict] = opt(doc="the arms: {name, init, strategy, train, budget} each", factory=list)
    sizes: list[int | None] = opt(doc="training-set sizes (null: all)", factory=lambda: [None],
                                  check=each(at_least(1), allow_empty=False))
    seeds: list[int] = opt(doc="training seeds", factory=lambda: [0], check=each(at_least(0), allow_empty=False))
    seed_sizes: list[int | None] = opt(doc="sizes run with every seed (others: the first seed); [] = all",
                                       factory=list, check=each(at_least(1)))
    workers: int = opt(1, "runs at once (separate processes, cores shared out)", check=at_least(1))
    metric: str = opt("", "headline metric (e.g. rouge1, bleu); default: the task's first")
    test_examples: int | None = opt(500, "test examples decoded per run (null: all)", check=at_least(1))
    baseline: str = opt("auto", "trivial baseline: auto | lead | copy | none", check=one_of(*KINDS))
    lead_words: int = opt(0, "lead-N baseline's N; 0: the mean reference length", check=at_least(0))
    samples: int = opt(8, "rows in the report's sample table", check=at_least(0))
    analysis_texts: int = opt(32, "target inputs for CKA and attention maps", check=at_least(1))
    note: str = opt("", "a caveat the report prints under its introduction")


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
    """Read STUDY.yaml (+ --key=value overrides) and check all of it (`check_study`) before
    anything runs; every error is one line naming the study file (and the task file or arm)."""
    try:
        cfg = build_config(StudyConfig, [path], overrides or {})
        check_study(cfg)
    except UserError as exc:
        if exc.path == path:  # YAML syntax: already names file and line
            raise
        raise ConfigError(str(exc), path=path) from None
    return cfg


def check_study(cfg: StudyConfig) -> None:
    """Everything a study file can get wrong that needs no model and no torch: the task and its
    metrics, the headline metric, the grid, the pretraining config, every run's config."""
    if not cfg.task:
        raise ConfigError("study: 'task' is required (a task YAML)")
    if not cfg.arms:
        raise ConfigError("study: 'arms' is empty")
    if cfg.bases and cfg.pretrained:
        raise ConfigError("study: 'bases' replaces 'pretrained'; give one of them")
    if not cfg.bases and bool(cfg.pretrained) == bool(cfg.pretrain):
        raise ConfigError("study: give exactly one of 'pretrained' (a folder), 'pretrain' (a run config) and 'bases'")
    task = study_task(cfg)
    _check_metric(cfg.metric, task)
    missing = [s for s in cfg.seed_sizes if s not in cfg.sizes]
    if missing:
        raise ConfigError(f"config key 'seed_sizes': {missing[0]} is not one of the sizes {cfg.sizes}")
    if cfg.bases:
        _check_bases(cfg)
    elif cfg.pretrain:
        from_dict(RunConfig, merge(cfg.pretrain, {"out": "pretrain"}), prefix="pretrain.")
    if cfg.reference and cfg.reference not in [a.get("name") for a in cfg.arms]:
        raise ConfigError(f"config key 'reference': '{cfg.reference}' is not an arm")
    plan(cfg, Path("study-check"))  # every run's RunConfig resolved and range-checked; nothing written


def _check_bases(cfg: StudyConfig) -> None:
    """Every base's pretraining and selection config, resolved (nothing written)."""
    from .bases import base_run_config, parse_bases, select_config

    bases = parse_bases(cfg.bases)
    for name, b in bases.items():
        base_run_config(cfg.pretrain, name, bases, Path("study-check"))
        if b.select:
            select_config(b, cfg.task, prefix=f"bases.{name}.select.")


def study_task(cfg: StudyConfig) -> TaskConfig:
    """The task every run trains on: the task file with `base.task` on top, checked."""
    try:
        task = load_task_file(cfg.task)
    except UserError as exc:
        raise ConfigError(f"config key 'task': {exc}") from None
    task = from_dict(TaskConfig, merge(to_dict(task), cfg.base.get("task") or {}), prefix="base.task.")
    check_task_config(task)
    return task


def _check_metric(metric: str, task: TaskConfig) -> None:
    """The headline metric must be a number the runs' test scores hold (else: a column of nan)."""
    from ..metrics import score_names  # lazily: the metrics' libraries take seconds to import

    known = score_names(task.metrics)
    if metric and metric not in known:
        raise ConfigError(f"config key 'metric': '{metric}' is not a score of the task's metrics "
                          f"({', '.join(task.metrics)}); choose from {', '.join(known)}")


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
        if a.base and a.base not in cfg.bases:
            raise ConfigError(f"{where}: base '{a.base}' is not one of the study's bases "
                              f"({', '.join(cfg.bases) or 'none: the study has no bases'})")
        if {"max_steps", "max_minutes"} & set(a.train):
            raise ConfigError(f"{where}: the step budget is shared (base.train.max_steps); "
                              f"use budget: matched for a compute-matched arm")
    if any(a.budget == "matched" for a in out) and not any(a.init == "scratch" and a.budget == "same" for a in out):
        raise ConfigError("arms: a 'budget: matched' arm needs a plain scratch arm to measure FLOPs per step")
    return out


def scratch_arm(cfg: StudyConfig) -> str | None:
    """The name of the plain scratch arm (same budget): the reference for speed-ups."""
    return next((a.name for a in arms(cfg) if a.init == "scratch" and a.budget == "same"), None)


def headline_metric(cfg: StudyConfig) -> str:
    """The metric verdicts are stated in: `metric`, else the task's first metric (rouge ->
    its ROUGE-L score, which is what `rouge` names in a run's flattened test scores)."""
    return cfg.metric or load_task_file(cfg.task).metrics[0]


def analysis_file(out: Path, name: str) -> Path:
    """OUT/analysis/NAME.json: what the analysis step computed after the runs, for the report."""
    return Path(out) / "analysis" / f"{name}.json"


def pretrained_dir(cfg: StudyConfig, out: Path, base: str = "") -> Path:
    """The model folder arms of `base` start from (default: the first base, or the one base)."""
    if cfg.bases:
        from .bases import base_dir

        return base_dir(Path(out), base or next(iter(cfg.bases)))
    return Path(cfg.pretrained) if cfg.pretrained else Path(out) / "pretrain"


def arm_base(cfg: StudyConfig, arm: ArmConfig) -> str:
    """The name of the base an arm uses ('' for a study with one base)."""
    return (arm.base or next(iter(cfg.bases))) if cfg.bases else ""


def plan(cfg: StudyConfig, out: Path) -> list[Run]:
    """Every run's resolved RunConfig, validated before anything trains; matched arms last."""
    task = to_dict(load_task_file(cfg.task))
    if cfg.pretrained and not Path(cfg.pretrained).is_dir():
        raise UserError(f"study: pretrained model folder '{cfg.pretrained}' not found")
    runs: list[Run] = []
    ordered = sorted(arms(cfg), key=lambda a: a.budget == "matched")  # validated once
    plain_scratch = scratch_arm(cfg)
    for size in cfg.sizes:
        seeds = cfg.seeds if not cfg.seed_sizes or size in cfg.seed_sizes else cfg.seeds[:1]
        for seed in seeds:
            for arm in ordered:
                pre = str(pretrained_dir(cfg, out, arm.base).resolve())
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
