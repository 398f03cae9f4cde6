"""A study with several bases: each built by the study's own stages (selection, task text,
continued pretraining) with its FLOPs counted, each arm starting from its own base, every
arm compared with the reference arm; and the config errors a bases section can have."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from transfergen.cli import main
from transfergen.errors import ConfigError
from transfergen.study import load_study, plan
from transfergen.tokenizer import TextTokenizer

from conftest import OBJECTS, SUBJECTS, TINY, VERBS, make_corpus


@pytest.fixture(scope="module")
def bases_study(tmp_path_factory) -> Path:
    """A toy task, a general corpus (royal-court template) and a pool with task-like lines."""
    root = tmp_path_factory.mktemp("bases")
    rng = random.Random(1)
    with open(root / "pairs.jsonl", "w") as fh:
        for _ in range(160):
            s, v, o = rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS)
            fh.write(json.dumps({"source": f"{s.capitalize()} {v} {o}", "target": f"{v} {o}."}) + "\n")
    (root / "task.yaml").write_text(yaml.safe_dump({
        "name": "toy", "reader": "jsonl", "path": str(root / "pairs.jsonl"), "prompt": "{source} =",
        "metrics": ["bleu"], "val_size": 20, "test_size": 10, "max_source_tokens": 16, "max_target_tokens": 16}))
    general = make_corpus(root / "general.txt", n_lines=300)
    pool = root / "pool.txt"
    lines = general.read_text().splitlines() + [f"{rng.choice(VERBS)} {rng.choice(OBJECTS)}." for _ in range(100)]
    pool.write_text("\n".join(lines) + "\n")
    steps = {"max_steps": 6, "eval_every": 6, "save_every": 6}
    select = {"corpus": [str(pool)], "keep": 0.3, "workers": 1}
    study = {
        "name": "bases", "task": str(root / "task.yaml"),
        "pretrain": {**TINY, "train": {**TINY["train"], **steps}},
        "bases": {"general": {"pretrain": {"data": {"corpus": [str(general)]}}},
                  "selected": {"select": select},
                  "dapt": {"init": "general", "text_from": "selected", "pretrain": {"train": {"max_steps": 3}}},
                  "tapt": {"init": "general", "task_text": "inputs", "pretrain": {"train": {"max_steps": 3}}}},
        "base": {"train": {"max_steps": 4, "batch_size": 8, "lr": 3e-3, "warmup_steps": 1, "eval_every": 4,
                           "save_every": 4, "log_every": 2, "eval_batches": 2, "threads": 1},
                 "eval": {"examples": 4, "max_new_tokens": 6}},
        "arms": [{"name": "scratch", "init": "scratch", "base": "general"}, {"name": "general", "base": "general"},
                 {"name": "selected", "base": "selected"}, {"name": "dapt", "base": "dapt"},
                 {"name": "tapt", "base": "tapt"}],
        "reference": "general", "sizes": [40], "seeds": [0], "test_examples": 6, "samples": 2,
        "analysis_texts": 4}
    (root / "study.yaml").write_text(yaml.safe_dump(study))
    return root / "study.yaml"


@pytest.mark.slow
def test_a_study_builds_its_bases_and_compares_them(bases_study, tmp_path, capfd):
    out = tmp_path / "s"
    assert main(["study", str(bases_study), "--out", str(out)]) == 0
    b = out / "bases"
    assert all((b / n / "study_done").is_file() for n in ("general", "selected", "dapt", "tapt"))
    sel = json.loads((out / "select" / "selected" / "selection.json").read_text())
    assert sel["method"] == "cross-entropy-difference" and 0 < sel["kept"]["docs"] < sel["corpus"]["docs"]
    assert not (out / "select" / "dapt").exists()  # DAPT reads the selection, made once
    dapt_cfg = yaml.safe_load((b / "dapt" / "run_config.yaml").read_text())
    assert dapt_cfg["data"]["corpus"] == [str(out / "select" / "selected" / "selected.jsonl")]
    # Continued bases start from general's folder and keep its tokenizer; TAPT read the task's inputs.
    for name in ("dapt", "tapt"):
        rc = yaml.safe_load((b / name / "run_config.yaml").read_text())
        assert Path(rc["init"]) == (b / "general").resolve()
        assert TextTokenizer.load(b / name).fingerprint() == TextTokenizer.load(b / "general").fingerprint()
    tapt_text = (out / "select" / "tapt" / "task_text.jsonl").read_text().splitlines()
    assert len(tapt_text) == 160 - 30 and not json.loads(tapt_text[0])["text"].endswith(".")  # inputs only
    costs = {n: v["cost"] for n, v in json.loads((out / "analysis" / "bases.json").read_text()).items()}
    assert costs["dapt"]["steps"] == 3 and costs["general"]["steps"] == 6
    assert costs["dapt"]["inherited_flops"] == costs["general"]["total_flops"] == costs["general"]["flops"] > 0
    assert costs["dapt"]["total_flops"] == pytest.approx(costs["dapt"]["flops"] + costs["general"]["flops"])
    # Each arm starts from its own base; scratch copies the shape and tokenizer of its base.
    runs = {r.arm.name: r for r in plan(load_study(str(bases_study)), out)}
    assert runs["dapt"].cfg.init == str((b / "dapt").resolve())
    assert runs["scratch"].cfg.model.like == runs["general"].cfg.init
    summary = json.loads((out / "summary.json").read_text())
    rows = {r["arm"]: r for r in summary["rows"]}
    assert rows["dapt"]["flops_total"] == pytest.approx(rows["dapt"]["flops_target"] + costs["dapt"]["total_flops"])
    assert rows["scratch"]["flops_total"] == rows["scratch"]["flops_target"]
    for arm in ("selected", "dapt", "tapt"):  # against the reference arm, paired, beside scratch
        vs = rows[arm]["vs_reference"]
        assert vs["against"] == "general" and vs["ci_low"] <= vs["delta"] <= vs["ci_high"]
        assert rows[arm]["vs_scratch"]["against"] == "scratch"
    md = (out / "report.md").read_text()
    assert "## Bases: what each cost" in md and "## Against general" in md and "| dapt | general |" in md
    # Re-running rebuilds nothing: the bases and selections are marked done.
    stamp = (out / "select" / "selected" / "selection.json").stat().st_mtime_ns
    capfd.readouterr()
    assert main(["study", str(bases_study), "--out", str(out)]) == 0
    assert "5 already finished" in capfd.readouterr().out
    assert (out / "select" / "selected" / "selection.json").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("change,match", [
    ({"arms": [{"name": "a", "base": "nope"}], "reference": ""}, r"\(a\): base 'nope' is not one of the"),
    ({"bases": {"x": {"init": "y"}, "y": {"init": "x"}}}, "cycle"),
    ({"bases": {"x": {"init": "ghost"}}}, r"bases\.x\.init: 'ghost' is not a base"),
    ({"bases": {"x": {"select": {"corpus": ["a"]}, "task_text": "inputs"}}}, "at most one of 'select', 'task_text'"),
    ({"bases": {"x": {"select": {"keep": 2}}}}, r"bases\.x\.select\.keep"),
    ({"bases": {"x": {"task_text": "labels"}}}, r"bases\.x\.task_text"),
    ({"bases": {"x": {"text_from": "x"}}}, "cycle"),
    ({"reference": "nobody"}, "'reference': 'nobody' is not an arm"),
])
def test_bad_bases_fail_naming_the_key(bases_study, change, match):
    with pytest.raises(ConfigError, match=match):
        load_study(str(bases_study), change)
