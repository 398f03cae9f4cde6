"""A study on a cluster: `--emit-commands` prints one self-contained shell command per job in
dependency order; run by hand (any order within a wave, from another folder) and gathered
with `--report-only`, they give the report `study` itself gives."""

from __future__ import annotations

import json
import random
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from transfergen.cli import main
from transfergen.config import merge

from conftest import OBJECTS, SUBJECTS, TINY, VERBS, make_corpus

# Wall-clock numbers differ between any two runs; everything else must be identical.
TIMES = ("elapsed_s", "train_s", "test_s", "wall", "minutes", "seconds")


@pytest.fixture(scope="module")
def cluster_study(tmp_path_factory) -> Path:
    """A study that pretrains first, then scratch, full and a compute-matched scratch arm."""
    root = tmp_path_factory.mktemp("cluster")
    rng = random.Random(2)
    with open(root / "pairs.jsonl", "w", encoding="utf-8") as fh:
        for _ in range(120):
            s, v, o = rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS)
            fh.write(json.dumps({"source": f"{s.capitalize()} {v} {o}", "target": f"{v} {o}."}) + "\n")
    (root / "task.yaml").write_text(yaml.safe_dump({
        "name": "toy", "reader": "jsonl", "path": str(root / "pairs.jsonl"), "prompt": "{source} =",
        "metrics": ["rouge"], "val_size": 16, "test_size": 12, "max_source_tokens": 16, "max_target_tokens": 12}))
    pretrain = merge(TINY, {"data": {"corpus": [str(make_corpus(root / "corpus.txt", n_lines=200))]},
                            "train": {"max_steps": 6, "eval_every": 6, "save_every": 6}})
    study = {"name": "toy", "task": str(root / "task.yaml"), "pretrain": pretrain,
             "base": {"train": {"max_steps": 4, "batch_size": 8, "lr": 3e-3, "warmup_steps": 1, "eval_every": 4,
                                "save_every": 4, "log_every": 2, "eval_batches": 1, "threads": 1},
                      "eval": {"examples": 4, "max_new_tokens": 4}},
             "arms": [{"name": "scratch", "init": "scratch"}, {"name": "full"},
                      {"name": "matched", "init": "scratch", "budget": "matched"}],
             "sizes": [40], "seeds": [0], "metric": "rouge1", "test_examples": 6, "samples": 2, "analysis_texts": 3}
    (root / "study.yaml").write_text(yaml.safe_dump(study))
    return root / "study.yaml"


def _untimed(value, out: Path):
    """`value` (JSON data) without wall-clock numbers, the study folder's path made neutral."""
    if isinstance(value, dict):
        return {k: _untimed(v, out) for k, v in value.items() if not any(t in k for t in TIMES)}
    if isinstance(value, list):
        return [_untimed(v, out) for v in value]
    return value.replace(str(out.resolve()), "OUT").replace(str(out), "OUT") if isinstance(value, str) else value


def _what_study_wrote(out: Path) -> dict:
    """The report's numbers and every file they come from, untimed."""
    found = {"summary": json.loads((out / "summary.json").read_text())}
    for name in ("pretrain_cost", "baseline", "vs_scratch", "domain"):
        found[name] = json.loads((out / "analysis" / f"{name}.json").read_text())
    for done in sorted((out / "runs").rglob("done.json")):
        found[done.parent.relative_to(out).as_posix()] = json.loads(done.read_text())
    verdict = (out / "report.md").read_text().split("## Verdict", 1)[1].split("## Summary", 1)[0]
    return _untimed({**found, "verdict_text": verdict}, out)


@pytest.mark.slow
def test_emitted_commands_run_by_hand_give_the_study_report(cluster_study, tmp_path, capsys):
    by_study, by_hand = tmp_path / "by-study", tmp_path / "by-hand"
    assert main(["study", str(cluster_study), "--out", str(by_study)]) == 0
    capsys.readouterr()

    assert main(["study", str(cluster_study), "--out", str(by_hand), "--emit-commands", "--samples=2"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert [ln for ln in printed if ln.startswith("#")] == [
        "# wave 1/4: pretraining", "# wave 2/4: runs (after wave 1)",
        "# wave 3/4: compute-matched runs, each after its scratch partner (after wave 2)",
        "# wave 4/4: analysis (after wave 3)"]
    commands = [ln for ln in printed if not ln.startswith("#")]
    jobs = [shlex.split(c)[shlex.split(c).index("--job") + 1] for c in commands]
    assert jobs == ["pretrain", "scratch/n40/s0", "full/n40/s0", "matched/n40/s0", "analysis"]
    assert not (by_hand / "runs").exists()  # printing commands runs nothing
    for c in commands:  # self-contained: its folder, this interpreter, absolute paths, the overrides
        argv = shlex.split(c.split(" && ", 1)[1])
        assert c.startswith("cd /") and sys.executable in argv and "--samples=2" in argv
        assert str(cluster_study.resolve()) in argv and str(by_hand.resolve()) in argv

    # Out of order, a job refuses in one line, before any work.
    assert main(["study", str(cluster_study), "--out", str(by_hand), "--job", "matched/n40/s0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs job pretrain finished first" in err[0]
    assert main(["study", str(cluster_study), "--out", str(by_hand), "--job", "nope/n1/s0"]) == 2
    assert "no such job" in capsys.readouterr().err

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    order = [commands[0], commands[2], commands[1], *commands[3:]]  # a wave's jobs in any order
    for c in order:
        res = subprocess.run(c, shell=True, cwd=elsewhere, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, (c, res.stderr[-2000:])
    res = subprocess.run(commands[1], shell=True, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "already finished" in res.stdout  # a finished job does nothing

    assert main(["study", str(cluster_study), "--out", str(by_hand), "--report-only", "--samples=2"]) == 0
    assert _what_study_wrote(by_hand) == _what_study_wrote(by_study)
    matched = json.loads((by_hand / "runs" / "matched" / "n40" / "s0" / "done.json").read_text())
    assert matched["steps"] > 4  # the pretraining's FLOPs came on top, read from the scratch partner
