"""Studies: a 2-arm x 1-size grid finishes, skips finished runs, resumes a killed one, and
writes a report whose figures exist; baselines and the compute-matched budget."""

from __future__ import annotations

import html
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from transfergen.baselines import baseline_outputs, mean_target_length
from transfergen.cli import main
from transfergen.config import TaskConfig
from transfergen.data.tasks import Example
from transfergen.errors import ConfigError
from transfergen.study import load_study, plan

from conftest import OBJECTS, SUBJECTS, VERBS


@pytest.fixture(scope="module")
def study_file(tmp_path_factory, tiny_pretrained) -> Path:
    """A toy task and a 2-arm study over the shared tiny pretrained model."""
    root = tmp_path_factory.mktemp("study")
    rng = random.Random(1)
    with open(root / "pairs.jsonl", "w") as fh:
        for _ in range(200):
            s, v, o = rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS)
            fh.write(json.dumps({"source": f"{s.capitalize()} {v} {o}", "target": f"{v} {o}."}) + "\n")
    (root / "task.yaml").write_text(yaml.safe_dump({
        "name": "toy", "reader": "jsonl", "path": str(root / "pairs.jsonl"), "prompt": "{source} =",
        "metrics": ["rouge", "bleu"], "val_size": 30, "test_size": 20, "max_source_tokens": 16,
        "max_target_tokens": 16}))
    study = {"name": "toy", "task": str(root / "task.yaml"), "pretrained": str(tiny_pretrained),
             "base": {"train": {"max_steps": 8, "batch_size": 8, "lr": 3e-3, "warmup_steps": 2, "eval_every": 4,
                                "save_every": 4, "log_every": 2, "eval_batches": 2, "threads": 1},
                      "eval": {"examples": 6, "max_new_tokens": 6}},
             "arms": [{"name": "scratch", "init": "scratch"}, {"name": "full"}],
             "sizes": [60], "seeds": [0], "metric": "rouge1", "test_examples": 10, "samples": 3,
             "analysis_texts": 4}
    (root / "study.yaml").write_text(yaml.safe_dump(study))
    return root / "study.yaml"


@pytest.mark.slow
def test_two_arm_study_finishes_resumes_and_reports(study_file, tmp_path, capfd):
    capsys = capfd  # fd-level: the runs are child processes writing to our terminal
    out = tmp_path / "s"
    assert main(["study", str(study_file), "--out", str(out), "--workers=2"]) == 0  # two processes at once
    runs = {a: out / "runs" / a / "n60" / "s0" for a in ("scratch", "full")}
    assert all((d / "log.txt").stat().st_size > 0 for d in runs.values())  # each child's own log
    done = {a: json.loads((d / "done.json").read_text()) for a, d in runs.items()}
    assert all(d["steps"] == 8 and d["train_examples"] == 60 and d["test_n"] == 10 for d in done.values())
    assert all(0 <= d["test"]["rouge1"] <= 100 and d["flops"] > 0 for d in done.values())
    assert (runs["full"] / "layers.json").is_file() and not (runs["scratch"] / "layers.json").exists()
    attention = json.loads((runs["full"] / "attention.json").read_text())  # written by the run, not the report
    assert set(attention["maps"]) == {"pretrained", "full"} and len(attention["tokens"]) > 1
    assert all(abs(sum(row) - 1) < 1e-3 for row in attention["maps"]["full"])
    for name in ("pretrain_cost", "baseline", "domain", "vs_scratch"):  # the analysis step, after the runs
        assert (out / "analysis" / f"{name}.json").is_file(), name
    from transfergen.results import read_curve

    curves = {a: read_curve(d) for a, d in runs.items()}  # step 0: the head start transfer gives
    assert [c["step"] for c in curves["full"]] == [0, 4, 8]
    assert curves["full"][0]["val_loss"] < curves["scratch"][0]["val_loss"]
    for name in ("curves_n60.png", "final.png", "layers.png", "attention.png"):
        assert (out / "figures" / name).stat().st_size > 1000, name
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert "## Summary" in md and "lead-" in md and "Jensen-Shannon" in md
    assert page.count("data:image/png;base64,") >= 4 and "<table>" in page
    # The verdict opens the report: full against scratch with its paired bootstrap, in all three outputs.
    summary = json.loads((out / "summary.json").read_text())
    row = next(r for r in summary["rows"] if r["arm"] == "full")
    vs = row["vs_scratch"]
    assert vs["against"] == "scratch" and vs["ci_low"] <= vs["delta"] <= vs["ci_high"] and 0 < vs["p"] <= 1
    assert vs["delta"] == pytest.approx(done["full"]["test"]["rouge1"] - done["scratch"]["test"]["rouge1"])
    line = summary["verdict"]["n=60"][0]
    assert line.startswith(f"full: ROUGE-1 {vs['delta']:+.2f} (95% CI") and line in md
    assert html.escape(line) in page
    assert md.index("## Verdict") < md.index("## Summary")
    printed = capsys.readouterr().out
    assert "report: " in printed and "| scratch |" in printed and "| full |" in printed  # the summary table

    # The report alone is rebuilt from those files: no model loaded, torch never imported.
    figure = out / "figures" / "attention.png"
    figure.unlink()
    code = ("import sys; from transfergen.cli import main; "
            f"rc = main(['study', {str(study_file)!r}, '--out', {str(out)!r}, '--report-only']); "
            "assert rc == 0 and 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert figure.stat().st_size > 1000 and "| full |" in res.stdout

    # A finished study is skipped entirely; done.json stays untouched.
    stamp = {a: (d / "done.json").stat().st_mtime_ns for a, d in runs.items()}
    assert main(["study", str(study_file), "--out", str(out)]) == 0
    assert "2 already finished" in capsys.readouterr().out
    assert {a: (d / "done.json").stat().st_mtime_ns for a, d in runs.items()} == stamp

    # A run killed between checkpoints (step 4 saved, step 8 not) resumes from step 4 and ends
    # exactly where the uninterrupted run ended.
    import shutil

    full = runs["full"]
    for name in ("done.json", "layers.json"):
        (full / name).unlink()
    shutil.rmtree(full / "test")
    shutil.rmtree(full / "checkpoints" / "step-0000008")
    assert main(["study", str(study_file), "--out", str(out)]) == 0
    assert "resumed from" in capsys.readouterr().err
    again = json.loads((full / "done.json").read_text())
    assert again["steps"] == 8 and again["test"] == done["full"]["test"]
    recs = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    keys = [(r["step"], "val_loss" in r) for r in recs if "event" not in r]
    assert len(keys) == len(set(keys)) and (8, True) in keys  # steps 5-8 logged once, not twice

def test_plan_matched_budget_and_bad_arms(study_file, tmp_path):
    cfg = load_study(str(study_file), {"arms": [{"name": "scratch", "init": "scratch"}, {"name": "full"},
                                                 {"name": "matched", "init": "scratch", "budget": "matched"}],
                                       "seeds": [0, 1], "sizes": [20, 60], "seed_sizes": [20]})
    runs = plan(cfg, tmp_path)
    assert [r.id for r in runs][:3] == ["scratch/n20/s0", "full/n20/s0", "matched/n20/s0"]
    assert len(runs) == 9  # 3 arms x (2 seeds at 20 + 1 seed at 60)
    matched = [r for r in runs if r.arm.name == "matched"]
    assert all(r.after == f"scratch/n{r.size}/s{r.seed}" for r in matched)
    assert runs[0].cfg.model.like == runs[1].cfg.init  # scratch copies the pretrained shape
    with pytest.raises(ConfigError, match="step budget is shared"):
        plan(load_study(str(study_file), {"arms": [{"name": "a", "train": {"max_steps": 5}}]}), tmp_path)
    with pytest.raises(ConfigError, match=r"unknown config key 'arms\[0\]\.lr'"):
        plan(load_study(str(study_file), {"arms": [{"name": "a", "lr": 1}]}), tmp_path)


def test_matched_steps_add_the_pretraining_flops(study_file, tmp_path):
    from transfergen.study import matched_steps, pretrain_cost

    cfg = load_study(str(study_file), {"arms": [{"name": "scratch", "init": "scratch"},
                                                 {"name": "m", "init": "scratch", "budget": "matched"}]})
    run = plan(cfg, tmp_path)[1]
    partner = tmp_path / "partner"
    partner.mkdir()
    (partner / "done.json").write_text(json.dumps({"flops": 8e9, "steps": 8}))
    pre = pretrain_cost(Path(cfg.pretrained))
    assert pre["steps"] == 40 and pre["flops"] > 0  # the shared tiny model's 40 pretraining steps
    assert matched_steps(run, partner, pre) == 8 + -(-pre["flops"] // 1e9)


def test_trivial_baselines():
    train = [Example("a b c d e f", "x y z"), Example("g h", "u v w t u")]
    en = TaskConfig(source_lang="en", target_lang="en")
    assert mean_target_length(train, "en") == 4
    label, hyps = baseline_outputs("auto", en, train, [Example("one two three four five six", "t")])
    assert label == "lead-4 words" and hyps == ["one two three four"]
    de = TaskConfig(source_lang="en", target_lang="de")
    assert baseline_outputs("auto", de, train, train) == ("copy source", ["a b c d e f", "g h"])
    zh = TaskConfig(source_lang="zh", target_lang="zh")
    assert baseline_outputs("lead", zh, [Example("x", "今天天气")], [Example("我们喜欢机器学习", "t")]) \
        == ("lead-4 characters", ["我们喜欢"])


def _row(arm, mean, std, n, transfer=True):
    return {"arm": arm, "size": 100, "train_examples": 100, "transfer": transfer, "final_val_loss": 3.0,
            "test": {"mean": mean, "std": std, "n": n, "min": mean, "max": mean}}


def test_findings_separate_real_gaps_from_seed_noise():
    from transfergen.report import findings

    rows = [_row("scratch", 10.0, 0.5, 3, False), _row("full", 14.0, 0.6, 3), _row("lora", 10.4, 0.5, 3)]
    lines = findings(rows, "bleu", {"label": "copy source", "scores": {"bleu": 12.0}}, "scratch")
    assert "full is better than scratch by 4.00 bleu (real)" in lines[0]
    assert "lora is better than scratch by 0.40 bleu (within seed noise)" in lines[1]
    assert lines[2].endswith("Arms above it: full.")
    one = findings([_row("scratch", 10.0, 0.0, 1, False), _row("full", 30.0, 0.0, 1)], "bleu", None, "scratch")
    assert "one seed: training noise not measured" in one[0] and "floor" not in " ".join(one)
    low = findings([_row("scratch", 0.8, 0.0, 1, False), _row("full", 0.6, 0.0, 1)], "bleu", None, "scratch")
    assert "at the metric's floor" in low[-1]
    big = [dict(r, size=500, train_examples=500) for r in (_row("scratch", 10.0, 0.0, 1, False),
                                                           _row("full", 13.0, 0.0, 1), _row("lora", 10.5, 0.0, 1))]
    borrowed = findings(rows + big, "bleu", None, "scratch")
    assert "(one seed; likely real: twice the seed std at n=100 is 1.20)" in borrowed[2]
    assert "(one seed; within the seed noise seen at n=100 (1.00))" in borrowed[3]
    loss = findings([_row("scratch", 50.0, 1, 2, False), _row("full", 40.0, 1, 2)], "test_ppl", None, "scratch")
    assert "full is better than scratch by 10.00" in loss[0]  # lower perplexity is better


def test_report_blocks_render_the_same_table_in_markdown_and_html(tmp_path):
    from transfergen.document import Doc

    doc = Doc()
    doc.table(["a", "b|c"], [[1, "x|y"]])
    doc.md(["| k | v |", "|---|---|", "| jsd | 0.5 |", "", "- one", "- <two>"])
    md, page = doc.markdown(tmp_path), doc.html("t")
    assert "| a | b|c |\n|---|---|\n| 1 | x\\|y |" in md
    assert "<td>x|y</td>" in page and "<td>jsd</td><td>0.5</td>" in page and "<li>&lt;two&gt;</li>" in page


def test_analyze_commands(study_file, tmp_path, capsys):
    pre = yaml.safe_load(study_file.read_text())["pretrained"]
    src, tgt = tmp_path / "src.txt", tmp_path / "tgt.txt"
    src.write_text("the king rides a horse\nthe queen reads a book\n" * 20)
    tgt.write_text("the enzyme binds the substrate\nthe king reads\n" * 20)
    out = tmp_path / "domain.json"
    assert main(["analyze", "domain", "--source", str(src), "--target", str(tgt), "--model", pre,
                 "--out", str(out)]) == 0
    assert "Jensen-Shannon" in capsys.readouterr().out
    rep = json.loads(out.read_text())
    assert 0 < rep["jsd"] < 1 and rep["ppl_source"] > 1 and rep["distinctive_target"][0]["word"] in (
        "enzyme", "binds", "substrate")
    task = yaml.safe_load(study_file.read_text())["task"]
    assert main(["analyze", "layers", "--pretrained", pre, "--finetuned", pre, "--task", task,
                 "--examples", "4"]) == 0
    printed = capsys.readouterr().out
    assert "| layer 0 | 0.0000 | 1.000 |" in printed
    assert main(["analyze", "domain", "--source", str(tmp_path / "missing.txt"), "--target", str(tgt)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.txt" in err[0]


def test_bad_study_files_fail_in_one_line(study_file, tmp_path, capsys):
    data = yaml.safe_load(study_file.read_text())
    cases = {"typo": dict(data, wokers=2), "arm": dict(data, arms=[{"name": "x", "init": "pretrianed"}]),
             "missing": dict(data, pretrained=str(tmp_path / "nope"))}
    for name, bad in cases.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(bad))
        assert main(["study", str(path), "--out", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("transfergen: error:"), (name, err)
        assert not (tmp_path / name / "runs").exists()  # nothing ran
        if name == "typo":
            assert "typo.yaml" in err[0] and "wokers" in err[0]
        if name == "arm":
            assert "pretrianed" in err[0]
