"""Vocabulary extension: learning tokens, fertility/unknown-byte stats, embedding surgery."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import AutoTokenizer

from transfergen.errors import UserError
from transfergen.model import HFCausalLM, ModelShape, TransferGenLM, build_model
from transfergen.hub import load_model, save_model
from transfergen.tokenizer import TextTokenizer
from transfergen.vocab import (
    add_tokens, extend_vocabulary, init_rows_from_pieces, learn_new_tokens, resize_embeddings,
    tokenizer_stats,
)

EN_S = ["the farmer", "a student", "my neighbour", "the old king", "every child", "our teacher"]
EN_V = ["reads", "writes about", "likes", "carries", "finds", "watches"]
EN_O = ["a book", "the river", "some bread", "the letters", "a red apple", "the morning news"]
ZH_S = ["我们", "老师", "学生们", "我的朋友", "这个城市", "他们", "孩子", "医生"]
ZH_V = ["喜欢", "学习", "认为", "希望", "需要", "发现", "讨论", "记得"]
ZH_O = ["中文", "新的方法", "北京的天气", "这本书", "数学问题", "历史故事", "音乐", "科学"]
ZH_T = ["今天", "昨天", "明天", "现在", ""]
BIO_T = ["photosynthesis", "chlorophyll", "mitochondria", "thylakoid", "stomata"]
BIO_P = ["the leaf", "a cell", "the plant", "the root"]
BIO_G = ["energy", "light", "growth", "water"]
EXTRA = ["Mixed 中文 and English, 北京 in text.", "emoji 😀 and café ñ", "  spaces\tand\nlines  "]


def english(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.choice(EN_S).capitalize()} {rng.choice(EN_V)} {rng.choice(EN_O)} "
            f"on day {rng.randint(1, 99)}." for _ in range(n)]


def chinese(n: int = 300, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.choice(ZH_T)}{rng.choice(ZH_S)}{rng.choice(ZH_V)}{rng.choice(ZH_O)}，"
            f"{rng.choice(ZH_S)}{rng.choice(ZH_V)}{rng.choice(ZH_O)}。" for _ in range(n)]


def biology(n: int = 200, seed: int = 2) -> list[str]:
    rng = random.Random(seed)
    return [f"The {rng.choice(BIO_T)} in {rng.choice(BIO_P)} needs {rng.choice(BIO_T)} "
            f"for {rng.choice(BIO_G)}." for _ in range(n)]


@pytest.fixture(scope="module")
def tok() -> TextTokenizer:
    """English-only byte-level BPE: Chinese is pure byte fallback for it."""
    return TextTokenizer.train(english(), vocab_size=350)


def tiny_model(vocab: int, seed: int = 0) -> TransferGenLM:
    shape = ModelShape(vocab_size=vocab, n_layer=1, d_model=32, n_head=2, n_kv_head=2, d_ff=64,
                       max_seq_len=64, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return build_model(shape, seed=seed).eval()


@pytest.fixture(scope="module")
def zh_ext(tok):
    model = tiny_model(tok.vocab_size)
    old_weight = model.model.embed_tokens.weight.detach().clone()
    new_tok, new_model, report = extend_vocabulary(tok, model, chinese(), 40)
    return new_tok, new_model, report, old_weight


def test_stats_counting_rules(tok):
    s = tokenizer_stats(tok, ["ab cd", "北京"])
    assert (s["n_chars"], s["n_words"]) == (7, 4)  # 2 spaced words + 2 CJK characters
    assert s["unknown_chars"] == 2 and s["n_tokens"] == len(tok.encode("ab cd")) + 6
    assert s["unknown_byte_rate"] == pytest.approx(2 / 7)
    assert tokenizer_stats(tok, english(50))["unknown_byte_rate"] == 0.0


def test_chinese_extension_lowers_fertility_and_unknown_rate(zh_ext):
    _, _, r, _ = zh_ext
    before, after = r["before"], r["after"]
    # Measured: 3.00 -> 0.48 tokens/char (== tokens/word for CJK), unknown 1.00 -> 0.00.
    assert before["tokens_per_char"] > 2.9 and before["unknown_byte_rate"] > 0.99
    assert after["tokens_per_char"] < 0.6 and after["unknown_byte_rate"] < 0.01
    assert after["tokens_per_word"] < before["tokens_per_word"] / 4
    assert 20 < r["n_added"] <= 40 and len(r["new_tokens"]) == 20  # report lists the first 20
    assert r["vocab_size_after"] == r["vocab_size_before"] + r["n_added"]
    assert "北京的天气" in r["new_tokens"] and "。" in r["new_tokens"]


def test_english_domain_words(tok):
    docs = biology()
    new = learn_new_tokens(tok, docs, 10)
    assert " photosynthesis" in new and " chlorophyll" in new
    assert len(new) == 10 and len(set(new)) == 10
    before, after = tokenizer_stats(tok, docs), tokenizer_stats(add_tokens(tok, new), docs)
    # Measured: 4.42 -> 1.55 tokens/word (0.72 -> 0.25 tokens/char); ASCII, so no unknown bytes.
    assert before["tokens_per_word"] > 4.0 and after["tokens_per_word"] < 2.0
    assert before["unknown_byte_rate"] == after["unknown_byte_rate"] == 0.0


def test_learned_tokens_are_new_and_ranked(tok):
    docs = chinese()
    new = learn_new_tokens(tok, docs, 15)
    assert len(new) == 15 and all(len(tok.encode(t)) > 1 for t in new)
    assert all("\ufffd" not in t for t in new)  # readable text, no partial characters
    assert learn_new_tokens(tok, docs, 5) == new[:5]  # greedy: a prefix of the longer list


def test_jieba_mode_learns_jieba_words():
    tj = TextTokenizer.train(english(), vocab_size=350, jieba=True)
    new = learn_new_tokens(tj, chinese(), 30)
    assert "北京" in new and not any("北京的" in t for t in new)  # no token crosses a jieba cut
    t2 = add_tokens(tj, new)
    assert t2.jieba and all(t2.decode(t2.encode(d)) == d for d in chinese(30))


def test_round_trip_and_new_tokens_used(zh_ext, tok):
    new_tok, _, r, _ = zh_ext
    for text in chinese(50, seed=9) + english(20) + EXTRA:
        assert new_tok.decode(new_tok.encode(text)) == text
    ids = new_tok.encode(r["new_tokens"][0])
    assert len(ids) == 1 and ids[0] >= tok.vocab_size
    assert new_tok.encode("The farmer reads a book.") == tok.encode("The farmer reads a book.")
    assert tok.vocab_size == 350 and new_tok.vocab_size == 350 + r["n_added"]  # old one untouched


def test_tokenizer_save_load_and_autotokenizer(zh_ext, tmp_path):
    new_tok = zh_ext[0]
    new_tok.save(tmp_path / "tok")
    loaded = TextTokenizer.load(tmp_path / "tok")
    auto = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    for text in chinese(20, seed=5) + EXTRA:
        ids = new_tok.encode(text)
        assert loaded.encode(text) == ids
        assert auto(text, add_special_tokens=False)["input_ids"] == ids
        assert auto.decode(ids) == text
    assert loaded.vocab_size == len(auto) == new_tok.vocab_size
    assert loaded.fingerprint() == new_tok.fingerprint()


def test_new_rows_are_piece_means_old_rows_kept(zh_ext, tok):
    new_tok, model, _, old_weight = zh_ext
    w = model.model.embed_tokens.weight
    n_old = tok.vocab_size
    assert w.shape == (new_tok.vocab_size, 32) and model.shape.vocab_size == new_tok.vocab_size
    assert torch.equal(w[:n_old], old_weight)
    for i in range(n_old, new_tok.vocab_size):
        text = new_tok.hf.convert_ids_to_tokens(i)
        assert torch.equal(w[i], old_weight[tok.encode(text)].mean(dim=0))
    assert model.lm_head.weight is w  # tied: one Parameter


def test_resize_keeps_old_logits_and_saves(tmp_path, tok):
    model = tiny_model(tok.vocab_size, seed=3)
    x = torch.tensor([tok.encode("The farmer reads a book on day 7.")])
    with torch.no_grad():
        ref = model(x)
    rows = init_rows_from_pieces(tok, model, ["北京", " photosynthesis"])
    model = resize_embeddings(model, rows)
    with torch.no_grad():
        out = model(x)
    assert out.shape[-1] == tok.vocab_size + 2
    # Not bitwise: a wider head matmul may block the float sums differently.
    assert torch.allclose(out[..., :tok.vocab_size], ref, atol=1e-6, rtol=0)
    save_model(model, tmp_path / "m")
    back = load_model(tmp_path / "m")
    assert isinstance(back, TransferGenLM) and back.shape.vocab_size == tok.vocab_size + 2
    assert back.lm_head.weight is back.model.embed_tokens.weight
    with torch.no_grad():
        assert torch.equal(back(x), out)


@pytest.mark.parametrize("tied", [True, False])
def test_resize_hf_model(tok, tied):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64,
                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                      max_position_embeddings=64, tie_word_embeddings=tied)
    model = HFCausalLM(LlamaForCausalLM(cfg)).eval()
    x = torch.tensor([tok.encode("Every child likes the river.")])
    with torch.no_grad():
        ref = model(x)
    rows = init_rows_from_pieces(tok, model, ["北京"])
    model = resize_embeddings(model, rows)
    emb = model.hf.get_input_embeddings().weight
    assert model.vocab_size == tok.vocab_size + 1 and torch.equal(emb[-1], rows[0])
    assert (model.hf.get_output_embeddings().weight is emb) == tied
    with torch.no_grad():
        assert torch.allclose(model(x)[..., :tok.vocab_size], ref, atol=1e-6)


def test_errors(tok):
    model = tiny_model(tok.vocab_size)
    with pytest.raises(UserError, match=r"vocab\.add"):
        extend_vocabulary(tok, model, chinese(10), 0)
    with pytest.raises(UserError, match=r"vocab\.extend_from"):
        extend_vocabulary(tok, model, ["", "  "], 5)
    with pytest.raises(UserError, match="embedding rows"):
        extend_vocabulary(tok, tiny_model(tok.vocab_size + 5), chinese(10), 5)
    with pytest.raises(UserError, match="café"):
        add_tokens(tok, ["café"])  # the byte-level decoder would garble it
    assert add_tokens(tok, [" café"]).decode(add_tokens(tok, [" café"]).encode("a café")) == "a café"


def test_fewer_useful_tokens_is_reported(tok):
    docs = ["北京北京北京"] * 5
    _, model, r = extend_vocabulary(tok, tiny_model(tok.vocab_size), docs, 50)
    assert 0 < r["n_added"] < 50 and "note" in r
    assert model.shape.vocab_size == tok.vocab_size + r["n_added"]
