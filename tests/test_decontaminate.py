"""data.exclude: pretraining documents that share a 13-word span with a task's val/test text are left out."""

from __future__ import annotations

import json

import yaml

from transfergen.data.decontaminate import held_out_ngrams, is_contaminated, ngrams
from transfergen.pretrain import run_pretrain

from conftest import tiny_config

HELD = "the senate voted on the nomination this afternoon and the tally was split evenly between parties"


def test_a_shared_13_word_span_is_contamination_and_12_words_are_not():
    grams = held_out_ngrams([HELD])
    words = HELD.split()
    assert is_contaminated("Breaking: " + " ".join(words[2:15]) + " today.", grams)  # 13 words in a row
    assert not is_contaminated("Breaking: " + " ".join(words[2:14]) + " today.", grams)  # only 12
    assert is_contaminated(HELD.upper().replace(" ", "  "), grams)  # case and spacing do not hide it
    assert len(ngrams(HELD)) == len(words) - 12


def test_a_short_held_out_text_counts_whole_from_8_words():
    """A one-sentence lead of 8 words has no 13-gram: the document must hold all of it."""
    lead = "Romania's president says the country is in crisis"  # 8 words, 9 tokens ("romania", "s", ...)
    held = held_out_ngrams([lead, "Trump signs order"])  # 3 words: no evidence, dropped
    assert held.lengths == {9}
    assert is_contaminated("BUCHAREST - " + lead + ", after protests.", held)
    assert not is_contaminated("Romania's president says the country is fine.", held)
    assert not is_contaminated("Trump signs order on Friday after a long day of talks in the house.", held)


def test_pretraining_leaves_out_the_tasks_test_articles(tmp_path):
    """A corpus of 40 articles; the task's test and val sources are the openings of 8 of them."""
    articles = [f"article {i} begins here with words that are its own " + " ".join(f"w{i}x{k}" for k in range(30))
                for i in range(40)]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(articles) + "\n")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"source": " ".join(a.split()[:20]), "target": f"title {i}"}) + "\n"
                             for i, a in enumerate(articles)))
    task = tmp_path / "task.yaml"
    task.write_text(yaml.safe_dump({"name": "t", "reader": "jsonl", "path": str(pairs), "val_size": 3,
                                    "test_size": 5}))
    run = tmp_path / "run"
    run_pretrain(tiny_config(corpus, run, data={"exclude": [str(task)]}, train={"max_steps": 2}))
    meta = json.loads((run / "data" / "meta.json").read_text())
    assert meta["n_excluded_docs"] == 8 and meta["n_docs"] == 32
    plain = tmp_path / "plain"
    run_pretrain(tiny_config(corpus, plain, train={"max_steps": 2}))
    assert json.loads((plain / "data" / "meta.json").read_text())["n_docs"] == 40
