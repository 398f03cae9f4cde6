"""Domain mismatch report: hand-made corpora whose statistics are known exactly."""

from __future__ import annotations

import json
import math

import pytest

from transfergen.analysis.domain import (STOPWORDS_EN, STOPWORDS_ZH, docs_perplexity, domain_report,
                                         format_domain, load_corpus)
from transfergen.analysis.remedy import EVIDENCE, suggest
from transfergen.config import ModelConfig
from transfergen.errors import UserError
from transfergen.model import build_model, resolve_shape
from transfergen.tokenizer import TextTokenizer

SOURCE = ["the king speaks of the crown", "a soldier remembers the old castle",
          "the queen fears a broken promise", "our army defends the morning"] * 5
TARGET = ["the enzyme binds the substrate", "a protein folds into a helix",
          "the enzyme cleaves the peptide bond", "the ribosome makes a protein"] * 5


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny ops run best on 1 thread


def test_identical_corpora():
    r = domain_report(SOURCE, SOURCE)
    assert abs(r["jsd"]) < 1e-12
    assert r["type_overlap"] == r["token_coverage"] == r["jaccard"] == 1
    assert r["source_words"] == r["target_words"] == 6 * 20 - 5  # "our army defends the morning"
    assert r["distinctive_source"] == r["distinctive_target"] == []
    json.dumps(r)  # plain JSON types only


def test_disjoint_vocabularies():
    r = domain_report(["alpha beta gamma"] * 3, ["delta epsilon"] * 4)
    assert abs(r["jsd"] - 1) < 1e-12
    assert r["type_overlap"] == r["token_coverage"] == r["jaccard"] == 0
    assert (r["source_types"], r["target_types"], r["target_words"]) == (3, 2, 8)


def test_hand_computed_jsd_and_overlap():
    r = domain_report(["a a b"], ["a b b c"])
    p = {"a": 2 / 3, "b": 1 / 3, "c": 0.0}
    q = {"a": 1 / 4, "b": 2 / 4, "c": 1 / 4}
    m = {w: (p[w] + q[w]) / 2 for w in p}
    kl = lambda x: sum(x[w] * math.log2(x[w] / m[w]) for w in x if x[w])  # noqa: E731
    assert r["jsd"] == pytest.approx((kl(p) + kl(q)) / 2, abs=1e-12)
    assert r["type_overlap"] == pytest.approx(2 / 3)  # a, b of a, b, c
    assert r["token_coverage"] == pytest.approx(3 / 4)  # the c token is unseen
    assert r["jaccard"] == pytest.approx(2 / 3)


def test_distinctive_words():
    source = ["the cat sat on the mat"] * 5
    target = ["the zebra sat on the mat with 42 zebras", "zebra and the cat ."] * 4
    r = domain_report(source, target, top=5)
    top_target = r["distinctive_target"][0]
    assert top_target == {"word": "zebra", "source_count": 0, "target_count": 8}
    listed = [d["word"] for side in ("source", "target") for d in r[f"distinctive_{side}"]]
    assert not set(listed) & STOPWORDS_EN
    assert "42" not in listed and "." not in listed
    assert "cat" in [d["word"] for d in r["distinctive_source"]]  # 5 in 30 words vs 4 in 64


def test_chinese_segmented_with_jieba():
    r = domain_report(["我们喜欢机器学习"] * 5, ["今天天气很好"] * 5, lang="zh")
    assert r["type_overlap"] == 0 and r["jsd"] == pytest.approx(1)
    target = [d["word"] for d in r["distinctive_target"]]
    assert any(len(w) > 1 for w in target), target
    assert "今天天气" in target and not set(target) & STOPWORDS_ZH  # jieba keeps it whole
    assert "我们" not in [d["word"] for d in r["distinctive_source"]]  # a stopword


def test_max_docs_caps_both_sides():
    r = domain_report(SOURCE, TARGET, max_docs=3)
    assert (r["source_docs"], r["target_docs"]) == (3, 3)


@pytest.fixture(scope="module")
def tok_model():
    tok = TextTokenizer.train(SOURCE + TARGET, vocab_size=300, min_frequency=2)
    cfg = ModelConfig(preset="tiny", n_layer=1, d_model=32, n_head=2, d_ff=64, max_seq_len=32)
    shape = resolve_shape(cfg, vocab_size=tok.vocab_size, bos_id=tok.bos_id, eos_id=tok.eos_id,
                          pad_id=tok.pad_id)
    return tok, build_model(shape, seed=0).eval()


def test_tokenizer_and_model_statistics(tok_model):
    tok, model = tok_model
    r = domain_report(SOURCE, TARGET + ["naïve café"] * 3, tokenizer=tok, model=model)
    assert r["fertility_source"] >= 1 and r["fertility_target"] >= 1
    assert 0 <= r["unknown_rate_target"] < 1
    for key in ("ppl_source", "ppl_target"):
        assert math.isfinite(r[key]) and r[key] > 1
    json.dumps(r)
    # No model: the tokenizer numbers only.
    assert "ppl_source" not in domain_report(SOURCE, TARGET, tokenizer=tok)
    with pytest.raises(UserError, match="tokenizer"):
        domain_report(SOURCE, TARGET, model=model)


def test_docs_perplexity_is_deterministic_and_capped(tok_model):
    tok, model = tok_model
    a = docs_perplexity(model, tok, TARGET, seq_len=16, max_blocks=2)
    assert a == docs_perplexity(model, tok, TARGET, seq_len=16, max_blocks=2)
    assert 1 < docs_perplexity(model, tok, ["x"], seq_len=16) < math.inf  # shorter than a block
    with pytest.raises(UserError, match="no text"):
        docs_perplexity(model, tok, [], seq_len=16)


def test_format_domain_lists_statistics_and_words():
    target = ["the zebra sat on the mat"] * 4
    lines = format_domain(domain_report(["the cat sat on the mat"] * 4, target))
    text = "\n".join(lines)
    assert "Jensen-Shannon" in text and "| documents | 4 | 4 |" in text
    assert "- zebra (0 / 4)" in lines and "- cat (4 / 0)" in lines
    assert all(isinstance(line, str) for line in lines)


def test_load_corpus_files_and_task(tmp_path):
    (tmp_path / "a.txt").write_text("one doc\n\nsecond doc\nthird doc\n", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text('{"text": "json doc"}\n', encoding="utf-8")
    spec = f"{tmp_path / 'a.txt'}, {tmp_path / 'b.jsonl'}"
    assert load_corpus(spec) == ["one doc", "second doc", "third doc", "json doc"]
    assert load_corpus(spec, max_docs=2) == ["one doc", "second doc"]
    rows = [{"source": f"question {i}", "target": f"answer {i}"} for i in range(6)]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (tmp_path / "t.yaml").write_text(f"reader: jsonl\npath: {tmp_path / 't.jsonl'}\nval_size: 1\n"
                                     "test_size: 1\n", encoding="utf-8")
    docs = load_corpus(str(tmp_path / "t.yaml"))
    assert len(docs) == 8 and {d.split()[0] for d in docs} == {"question", "answer"}
    assert len(load_corpus(str(tmp_path / "t.yaml"), max_docs=3)) == 3
    (tmp_path / "empty.txt").write_text("\n", encoding="utf-8")
    with pytest.raises(UserError, match="source corpus"):
        load_corpus(str(tmp_path / "empty.txt"), side="source")


def test_remedy_silent_when_the_mismatch_is_low():
    assert suggest(domain_report(SOURCE, SOURCE)) == []  # jsd 0
    assert suggest({"jsd": 0.349}) == []


def test_remedy_cites_the_report_and_the_studies_when_high():
    r = domain_report(["alpha beta gamma"] * 3, ["delta epsilon"] * 4)  # disjoint: jsd 1.0
    r.update(ppl_source=50.0, ppl_target=400.0)
    lines = suggest(r)
    assert lines[0].startswith("Mismatch is high: the unigram Jensen-Shannon divergence is 1.00 bits")
    assert "0% of target word tokens" in lines[0] and "(400) is 8.0x" in lines[0]
    assert "transfergen select" in lines[1]
    text = "\n".join(lines)
    m, t = EVIDENCE["multi30k"], EVIDENCE["tatoeba"]
    assert f"{m['selected'][0]:+.2f} chrF (95% CI {m['selected'][1]:+.2f} to {m['selected'][2]:+.2f})" in text
    assert f"{t['tapt'][0]:+.2f} chrF" in text and "from 0.51 to 0.18" in text
    # a perplexity ratio under 1.5x is not called out
    r.update(ppl_target=60.0)
    assert "perplexity" not in suggest(r)[0]
