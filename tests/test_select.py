"""`transfergen select`: on a constructed mix whose in-domain documents are known, the
cross-entropy difference keeps them and the random control keeps the base rate; Chinese is
cut by jieba; the bigram model is a distribution; bad input is one line and exit 2."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from transfergen.cli import main
from transfergen.data.ngram import EOS, UNK, BigramLM, vocabulary
from transfergen.select import SelectConfig, choose, run_select, train_models

KITCHEN = (["i", "you", "we", "my sister", "our cat"], ["like to eat", "cook", "want some", "never eat", "bake"],
           ["rice", "warm bread", "noodles", "an apple", "soup", "cake"], ["for dinner", "at home", "today", "now"])
NEWS = (["the ministry", "the central bank", "parliament", "the president", "investors"],
        ["announced", "approved", "rejected", "reported", "expects"],
        ["new tariffs", "the budget", "a reform of pensions", "growth of three percent", "the trade deal"],
        ["on monday", "after talks", "in the capital", "this quarter"])
KITCHEN_ZH = (["我", "你", "我们", "妹妹", "我的猫"], ["喜欢吃", "想吃", "不吃", "在做"],
              ["米饭", "面包", "面条", "苹果", "蛋糕"], ["当晚饭", "在家里", "今天"])
NEWS_ZH = (["国务院", "中央银行", "人民代表大会", "外交部"], ["宣布", "批准", "讨论", "报道"],
           ["经济改革", "财政预算", "贸易协定", "农业政策"], ["在北京", "本季度", "会议期间"])


def _sentences(parts, n: int, seed: int, sep: str = " ") -> list[str]:
    rng = random.Random(seed)
    return [sep.join(rng.choice(p) for p in parts) + ("." if sep else "。") for _ in range(n)]


def _mix(root: Path, in_parts, out_parts, sep: str = " ") -> tuple[list[str], set[str]]:
    """Two corpus files: 120 in-domain among 480 general sentences (known by construction),
    and a target file of fresh in-domain sentences (another seed)."""
    inside = _sentences(in_parts, 120, 1, sep)
    general = _sentences(out_parts, 480, 2, sep)
    docs = inside + general
    random.Random(3).shuffle(docs)
    (root / "a.txt").write_text("\n".join(docs[:300]) + "\n", encoding="utf-8")
    (root / "b.txt").write_text("\n".join(docs[300:]) + "\n", encoding="utf-8")
    (root / "target.txt").write_text("\n".join(_sentences(in_parts, 200, 4, sep)) + "\n", encoding="utf-8")
    return [str(root / "a.txt"), str(root / "b.txt")], set(inside)


def _kept(out: Path) -> list[str]:
    return [json.loads(x)["text"] for x in (out / "selected.jsonl").read_text(encoding="utf-8").splitlines()]


def test_bigram_is_a_distribution_in_every_context():
    docs = [["a", "b", "c"], ["a", "b", "b"], ["c", "a"]]
    lm = BigramLM(vocabulary(docs, min_count=1)).fit(docs)
    outcomes = ["a", "b", "c", UNK, EOS]  # what can follow: every word, <unk> and </s>
    for context in ("<s>", "a", "b", "never-seen"):
        assert math.fsum(math.exp(lm.logprob(context, w)) for w in outcomes) == pytest.approx(1.0, abs=1e-12)
    h, n = lm.cross_entropy(["a", "b", "zzz"])  # zzz is <unk>: finite, and 4 predictions (words + </s>)
    assert n == 4 and 0 < h < 10


def test_choose_keeps_the_lowest_scores_until_the_budget():
    scores = np.array([0.5, -1.0, np.inf, -1.0, 2.0])
    n_words = np.array([10, 4, 7, 6, 3])
    assert choose(scores, n_words, 4).tolist() == [False, True, False, False, False]
    assert choose(scores, n_words, 5).tolist() == [False, True, False, True, False]  # ties: corpus order
    assert choose(scores, n_words, 10**6).tolist() == [True, True, False, True, True]  # never the empty doc


def test_cross_entropy_difference_finds_the_in_domain_documents(tmp_path, capsys):
    corpus, inside = _mix(tmp_path, KITCHEN, NEWS)
    out = tmp_path / "sel"
    assert main(["select", "--corpus", *corpus, "--target", str(tmp_path / "target.txt"), "--out", str(out),
                 "--keep=0.15", "--workers=2"]) == 0  # two scoring processes
    assert "cross-entropy-difference: kept" in capsys.readouterr().out
    sel = json.loads((out / "selection.json").read_text())
    kept = _kept(out)
    precision = sum(d in inside for d in kept) / len(kept)
    assert precision == 1.0 and len(kept) >= 100  # in-domain share of the words is ~15%: nearly all of them
    assert sel["kept"]["docs"] == len(kept) and sel["corpus"]["docs"] == 600 and sel["lang"] == "en"
    assert sum(s["kept_docs"] for s in sel["per_source"]) == len(kept)
    ppl = sel["models"]["perplexity"]  # each model is better on its own side's held-out text
    assert ppl["in_domain_on_target_heldout"] < ppl["general_on_target_heldout"]
    assert ppl["general_on_corpus_heldout"] < ppl["in_domain_on_corpus_heldout"]
    words_in, words_gen = sel["models"]["in_domain"]["words"], sel["models"]["general"]["words"]
    assert words_in <= words_gen <= words_in + 20  # equal-sized models (the general one stops past it)
    assert sel["scores"]["threshold"] < sel["scores"]["quantiles"]["p50"]
    docs_in_order = [d for f in corpus for d in Path(f).read_text().splitlines()]
    assert kept == [d for d in docs_in_order if d in set(kept)]  # corpus order

    # The control keeps the same amount of text at the base rate (120 of 600 docs in-domain).
    rnd = tmp_path / "rnd"
    res = run_select(SelectConfig(corpus=corpus, target=str(tmp_path / "target.txt"), method="random", keep=0.15,
                                  workers=1), rnd)
    kept_rnd = _kept(rnd)
    assert abs(res["kept"]["words"] - sel["kept"]["words"]) <= 12  # one document's words either way
    assert sum(d in inside for d in kept_rnd) / len(kept_rnd) < 0.4 and res["models"] == {}


def test_token_budget_and_a_task_target(tmp_path):
    corpus, inside = _mix(tmp_path, KITCHEN, NEWS)
    pairs = tmp_path / "pairs.jsonl"
    with open(pairs, "w") as fh:
        for s in _sentences(KITCHEN, 150, 9):
            fh.write(json.dumps({"source": s, "target": s.upper()}) + "\n")
    task = tmp_path / "task.yaml"
    task.write_text(f"reader: jsonl\npath: {pairs}\nval_size: 10\ntest_size: 10\n")
    res = run_select(SelectConfig(corpus=corpus, target=str(task), tokens=300, workers=1), tmp_path / "sel")
    kept = _kept(tmp_path / "sel")
    last = len(kept[-1].split())  # the budget is reached by the document that crosses it
    assert 300 <= res["kept"]["words"] < 300 + 12 and res["budget_words"] == 300 and last > 0
    assert all(d in inside for d in kept) and res["target_docs"] == 2 * 130  # training sources and targets


def test_chinese_is_segmented_by_jieba(tmp_path):
    corpus, inside = _mix(tmp_path, KITCHEN_ZH, NEWS_ZH, sep="")
    cfg = SelectConfig(corpus=corpus, target=str(tmp_path / "target.txt"), keep=0.15, workers=1)
    res = run_select(cfg, tmp_path / "sel")
    assert res["lang"] == "zh" and res["segmentation"].startswith("jieba-")
    kept = _kept(tmp_path / "sel")
    assert sum(d in inside for d in kept) / len(kept) == 1.0
    lm_in, _, _ = train_models(cfg, (tmp_path / "target.txt").read_text().splitlines(), "zh")
    assert {"米饭", "面条", "蛋糕"} <= lm_in.vocab  # words, not characters


def test_bad_input_is_one_line(tmp_path, capsys):
    corpus, _ = _mix(tmp_path, KITCHEN, NEWS)
    target = str(tmp_path / "target.txt")
    assert main(["select", "--corpus", str(tmp_path / "missing.txt"), "--target", target,
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "missing.txt" in err and "file not found" in err and len(err.splitlines()) == 1
    assert main(["select", "--corpus", *corpus, "--target", target, "--out", str(tmp_path / "o"), "--keep=0"]) == 2
    assert "'keep'" in capsys.readouterr().err
    assert main(["select", "--corpus", *corpus, "--target", target, "--out", str(tmp_path / "o"),
                 "--method=best"]) == 2
    assert "'method'" in capsys.readouterr().err
    assert not (tmp_path / "o" / "selection.json").exists()
