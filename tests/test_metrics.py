"""Metrics: parity with sacrebleu, rouge-score and pycocoevalcap; Chinese; errors; `score` CLI."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from transfergen.cli import main
from transfergen.errors import UserError
from transfergen.metrics import METRICS, Score, bleu, chrf, cider, compute, rouge
from transfergen.metrics.tokenize import is_cjk_lang, words

MULTI30K = Path(__file__).resolve().parents[2] / "shared" / "data" / "multi30k" / "task2"

HYPS = ["The cat sat on the mat.", "A dog is running through the park!", "Two men are playing chess outside.",
        "The children were happily singing songs."]
REFS = [["The cat is sitting on the mat.", "There is a cat on the mat."],
        ["A dog runs in the park.", "The dog was running across a park."],
        ["Two men play chess in the street.", "Two old men are playing a game of chess."],
        ["Children sing happily.", "The kids are singing a song."]]
ZH_HYPS = ["我喜欢吃苹果。", "今天天气很好，我们去公园散步吧。", "他在图书馆里看书。"]
ZH_REFS = [["我喜欢吃香蕉。", "我爱吃苹果。"], ["今天天气不错，我们去公园走走吧。", "天气很好，去公园散步。"],
           ["他正在图书馆看书。", "他在图书馆读书。"]]


def streams(refs: list[list[str]]) -> list[list[str]]:
    return [list(s) for s in zip(*refs, strict=True)]


# --- BLEU and chrF: sacrebleu's own numbers -------------------------------------------------

@pytest.mark.parametrize("hyps, refs, lang, tok", [(HYPS, REFS, "en", "13a"), (ZH_HYPS, ZH_REFS, "zh", "zh")])
def test_bleu_chrf_match_sacrebleu(hyps, refs, lang, tok):
    import sacrebleu

    want = sacrebleu.corpus_bleu(hyps, streams(refs), tokenize=tok)
    got = bleu(hyps, refs, lang=lang)
    assert got.score == pytest.approx(want.score, abs=1e-12)
    assert f"tok:{tok}" in got.signature and "nrefs:2" in got.signature and got.signature.endswith(f"lang:{lang}")
    got1 = bleu(hyps, [r[:1] for r in refs], lang=lang)  # single reference
    assert got1.score == pytest.approx(sacrebleu.corpus_bleu(hyps, [[r[0] for r in refs]], tokenize=tok).score)
    assert chrf(hyps, refs, lang=lang).score == pytest.approx(sacrebleu.corpus_chrf(hyps, streams(refs)).score)


def test_bleu_chinese_tokenizer_and_override():
    assert bleu(ZH_HYPS, ZH_REFS, lang="zh").score > 20
    # 13a reads each Chinese sentence as (nearly) one word: the failure the zh default avoids.
    assert bleu(ZH_HYPS, ZH_REFS, lang="zh", tokenize="13a").score < 5
    assert "tok:char" in bleu(ZH_HYPS, ZH_REFS, lang="zh", tokenize="char").signature
    with pytest.raises(UserError, match="unknown BLEU tokenizer"):
        bleu(HYPS, REFS, tokenize="nope")


def test_variable_reference_counts():
    # A repeated reference changes neither BLEU nor chrF, so [a] must score as [a, a].
    ragged = [REFS[0][:1], REFS[1], REFS[2][:1], REFS[3]]
    padded = [r * 2 if len(r) == 1 else r for r in ragged]
    for metric in (bleu, chrf):
        got = metric(HYPS, ragged)
        assert got.score == pytest.approx(metric(HYPS, padded).score)
        assert "nrefs:var" in got.signature


# --- ROUGE -----------------------------------------------------------------------------------

def test_rouge_english_matches_rouge_score_with_stemming():
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    got = rouge(HYPS, REFS, lang="en")
    for key in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        best = [max(scorer.score(r, h)[key].fmeasure for r in refs) for h, refs in zip(HYPS, REFS, strict=True)]
        assert got.details[key] == pytest.approx(100 * sum(best) / len(best), abs=1e-9)
    assert got.score == got.details["rougeL"] and got.name == "ROUGE-L"
    assert "tok:default+porter" in got.signature


@pytest.mark.parametrize("zh_mode", ["jieba", "char"])
def test_rouge_chinese_identical_is_100(zh_mode):
    from rouge_score.rouge_scorer import RougeScorer

    assert RougeScorer(["rouge1"]).score("我喜欢吃苹果", "我喜欢吃苹果")["rouge1"].fmeasure == 0  # the bug
    got = rouge(["我喜欢吃苹果。", "今天天气很好"], [["我喜欢吃苹果。"], ["今天天气很好"]], lang="zh", zh_mode=zh_mode)
    assert all(v == pytest.approx(100) for v in got.details.values())


def test_rouge_chinese_partial_overlap_by_hand():
    # char: 我喜欢吃苹果 vs 我喜欢吃香蕉 share 4 of 6 chars, 3 of 5 bigrams, LCS 4.
    got = rouge(["我喜欢吃苹果"], [["我喜欢吃香蕉"]], lang="zh", zh_mode="char")
    assert got.details["rouge1"] == pytest.approx(400 / 6)
    assert got.details["rouge2"] == pytest.approx(60)
    assert got.details["rougeL"] == pytest.approx(400 / 6)
    # jieba: 我/喜欢/吃/苹果 vs 我/喜欢/吃/香蕉 share 3 of 4 words, 2 of 3 bigrams.
    got = rouge(["我喜欢吃苹果"], [["我喜欢吃香蕉"]], lang="zh")
    assert got.details["rouge1"] == pytest.approx(75)
    assert got.details["rouge2"] == pytest.approx(200 / 3)
    assert "tok:jieba" in got.signature


def test_words():
    assert words("Don't STOP, the dog's ball!") == ["don't", "stop", "the", "dog's", "ball"]
    assert words("我喜欢吃苹果，GPU很快!", "zh") == ["我", "喜欢", "吃", "苹果", "gpu", "很快"]
    assert words("我喜欢。", "zh", zh_mode="char") == ["我", "喜", "欢"]
    assert words("a, b", keep_punct=True) == ["a", ",", "b"]
    assert is_cjk_lang("zh-Hans") and is_cjk_lang("ja") and not is_cjk_lang("en")


# --- CIDEr-D -----------------------------------------------------------------------------------

def coco_cider(hyps: list[str], refs: list[list[str]]):
    cider_mod = pytest.importorskip("pycocoevalcap.cider.cider", reason="pycocoevalcap (test extra) not installed")
    return cider_mod.Cider().compute_score({i: r for i, r in enumerate(refs)}, {i: [h] for i, h in enumerate(hyps)})


def check_cider_parity(hyps: list[str], refs: list[list[str]]) -> None:
    tok_h = [" ".join(words(h)) for h in hyps]
    tok_r = [[" ".join(words(r)) for r in rs] for rs in refs]
    want, want_items = coco_cider(tok_h, tok_r)
    for got in (cider(hyps, refs), cider(tok_h, tok_r, pretokenized=True)):
        assert abs(got.score - want) < 1e-6
        assert max(abs(a - b) for a, b in zip(got.details["per_item"], want_items, strict=True)) < 1e-6


def test_cider_matches_pycocoevalcap_hand_written():
    hyps = [*HYPS, "a dog a dog a dog", "", "cat"]
    refs = [*REFS, ["a dog runs", "the dog a dog plays", "dog"], ["nothing here"], ["a cat", "cat"]]
    check_cider_parity(hyps, refs)  # repeated n-grams, an empty hypothesis, 1-3 references


@pytest.mark.skipif(not MULTI30K.is_dir(), reason=f"{MULTI30K} absent (shared data not mounted)")
def test_cider_matches_pycocoevalcap_multi30k():
    caps = []
    for k in range(1, 6):
        with gzip.open(MULTI30K / f"train.{k}.en.gz", "rt", encoding="utf-8") as fh:
            caps.append([next(fh).rstrip("\n") for _ in range(200)])
    check_cider_parity(caps[0], [list(r) for r in zip(*caps[1:], strict=True)])  # caption 1 vs captions 2-5


def test_cider_chinese_and_warning():
    got = cider(ZH_HYPS, ZH_REFS, lang="zh")
    assert got.score > 0 and "tok:jieba" in got.signature
    assert cider(ZH_HYPS, ZH_REFS, lang="zh", zh_mode="char").signature.count("tok:char") == 1
    with pytest.warns(UserWarning, match="fewer than 2 items"):
        assert cider(["a cat"], [["a cat"]]).score == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cider(HYPS, REFS)  # no warning with 2+ items


# --- shared API and errors ----------------------------------------------------------------------

@pytest.mark.parametrize("hyps, refs, needle", [
    (["a", "b"], [["a"]], "2 hypotheses but 1 reference lists"),
    (["a", "b"], [["a"], []], "item 2 has no references"),
    (["a", 3], [["a"], ["b"]], "hypothesis 2 is int"),
    (["a"], [["a", None]], "a reference of item 1 is NoneType"),
    ([], [], "no hypotheses"),
])
@pytest.mark.parametrize("name", sorted(METRICS))
def test_input_errors(name, hyps, refs, needle):
    with pytest.raises(UserError, match=needle):
        METRICS[name](hyps, refs)


def test_compute_and_score_object():
    out = compute(["bleu", "rouge"], HYPS, [r[0] for r in REFS], lang="en", options={"bleu": {"tokenize": "char"}})
    assert set(out) == {"bleu", "rouge"} and all(isinstance(s, Score) for s in out.values())
    assert "tok:char" in out["bleu"].signature  # a bare string counts as one reference
    assert json.loads(json.dumps(out["rouge"].to_dict()))["name"] == "ROUGE-L"
    with pytest.raises(UserError, match="unknown metric 'meteor'"):
        compute(["meteor"], HYPS, REFS)


# --- `transfergen score` --------------------------------------------------------------------------

def write(path: Path, lines: list[str]) -> str:
    path.write_text("".join(x + "\n" for x in lines), encoding="utf-8")
    return str(path)


def test_score_cli_table_and_json(tmp_path, capsys):
    hyp = write(tmp_path / "hyp.txt", ZH_HYPS)
    r1 = write(tmp_path / "ref1.txt", [r[0] for r in ZH_REFS])
    r2 = write(tmp_path / "ref2.txt", [ZH_REFS[0][1], "", ZH_REFS[2][1]])  # item 2: one reference
    assert main(["score", "--hyp", hyp, "--ref", r1, "--ref", r2, "--lang", "zh"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["metric", "score", "signature"]
    for name in ("BLEU", "chrF", "ROUGE-L", "CIDEr-D"):
        assert sum(ln.startswith(name + " ") for ln in out.splitlines()) == 1, out
    want = bleu(ZH_HYPS, [ZH_REFS[0], ZH_REFS[1][:1], ZH_REFS[2]], lang="zh").score
    assert main(["score", "--hyp", hyp, "--ref", r1, "--ref", r2, "--lang", "zh", "--metrics", "bleu,rouge",
                 "--zh-rouge", "char", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["bleu"]["score"] == pytest.approx(want) and "tok:char" in got["rouge"]["signature"]


def test_score_cli_mismatch_is_one_line_error(tmp_path):
    hyp = write(tmp_path / "hyp.txt", HYPS)
    ref2 = write(tmp_path / "ref2.txt", [r[0] for r in REFS][:3])
    res = subprocess.run([sys.executable, "-m", "transfergen", "score", "--hyp", hyp, "--ref", ref2],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [f"transfergen: error: {ref2} has 3 lines but {hyp} has 4"]


@pytest.mark.parametrize("make, needle", [
    (lambda d: (d / "bad.txt").write_bytes(b"ok\n\xff\n\nx\n") and d / "bad.txt", "bad.txt:2: not valid UTF-8"),
    (lambda d: d / "missing.txt", "missing.txt: file not found"),
])
def test_score_cli_bad_files(tmp_path, capsys, make, needle):
    bad = str(make(tmp_path))
    assert main(["score", "--hyp", bad, "--ref", bad]) == 2
    assert needle in capsys.readouterr().err
