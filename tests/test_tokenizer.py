"""TextTokenizer: byte-level BPE round trips, HF compatibility, jieba boundaries, loading."""

from __future__ import annotations

import json
import random

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from transfergen.errors import UserError
from transfergen.tokenizer import SIDE_FILE, TextTokenizer, jieba_pieces

EN_SUBJ = ["the cat", "a small dog", "my teacher", "the old farmer", "every student", "our neighbour"]
EN_VERB = ["reads", "writes", "likes", "carries", "finds", "watches", "remembers"]
EN_OBJ = ["a book", "the river", "some bread", "the letters", "a red apple", "the morning news"]
ZH_SUBJ = ["我们", "老师", "学生们", "我的朋友", "这个城市", "他们"]
ZH_VERB = ["喜欢", "学习", "认为", "希望", "需要", "发现"]
ZH_OBJ = ["中文", "新的方法", "北京的天气", "这本书", "数学问题", "历史故事"]
SAMPLE_ZH = "我们喜欢学习中文，老师认为这本书很有意思。"

ROUND_TRIP = [
    "The quick brown fox jumps over the lazy dog.",
    "我们喜欢学习中文，今天北京的天气很好！",
    "emoji 😀🎉 and mixed 中文 text",
    "  leading spaces,\ttabs\t\tand\nnew\r\nlines  \n\n",
    "unseen bytes: ñ ü ß Ω ∑ 𝔘 \x00 \x7f",  # noqa: RUF001 - a non-BMP letter on purpose
    " .  , ! ?",
    "",
]


def make_corpus(n: int = 300, seed: int = 0) -> list[str]:
    """A few hundred varied English + Chinese sentences from templates."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i % 2:
            out.append(f"{rng.choice(ZH_SUBJ)}{rng.choice(ZH_VERB)}{rng.choice(ZH_OBJ)}。")
        else:
            out.append(f"{rng.choice(EN_SUBJ).capitalize()} {rng.choice(EN_VERB)} "
                       f"{rng.choice(EN_OBJ)} on day {rng.randint(1, 99)}.")
    return out


@pytest.fixture(scope="module")
def tok() -> TextTokenizer:
    return TextTokenizer.train(iter(make_corpus()), vocab_size=500, min_frequency=2)


@pytest.fixture(scope="module")
def tok_jieba() -> TextTokenizer:
    # Repeat the sample so plain BPE would surely merge across its word boundaries.
    return TextTokenizer.train(make_corpus() + [SAMPLE_ZH] * 50, vocab_size=500, jieba=True)


def test_special_token_ids(tok):
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.sep_id) == (0, 1, 2, 3)
    assert tok.hf.convert_ids_to_tokens([0, 1, 2, 3]) == ["<pad>", "<bos>", "<eos>", "<sep>"]
    assert 300 < tok.vocab_size <= 500 and tok.vocab_size == len(tok.hf)
    assert not tok.jieba


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_round_trip(tok, tok_jieba, text):
    for t in (tok, tok_jieba):
        ids = t.encode(text)
        assert all(i >= 4 for i in ids), "no specials inside encoded text"
        assert t.decode(ids) == text


def test_encode_batch_matches_encode(tok, tok_jieba):
    for t in (tok, tok_jieba):
        assert t.encode_batch(ROUND_TRIP) == [t.encode(x) for x in ROUND_TRIP]


def test_decode_specials(tok):
    ids = [tok.bos_id, *tok.encode("hi there"), tok.eos_id]
    assert tok.decode(ids) == "hi there"
    assert tok.decode(ids, skip_special_tokens=False) == "<bos>hi there<eos>"


def test_fertility_english(tok):
    text = "The old farmer reads the morning news and every student likes a red apple."
    assert len(tok.encode(text)) < 0.6 * len(text.encode("utf-8"))


def test_save_load_and_autotokenizer(tok, tmp_path):
    tok.save(tmp_path / "tk")
    assert (tmp_path / "tk" / "tokenizer.json").is_file()
    assert json.loads((tmp_path / "tk" / SIDE_FILE).read_text())["jieba"] is False
    hf = AutoTokenizer.from_pretrained(str(tmp_path / "tk"))
    for text in ROUND_TRIP:
        ids = hf(text, add_special_tokens=False)["input_ids"]
        assert ids == tok.encode(text)
        assert hf.decode(ids) == text
    assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id, hf.sep_token_id) == (1, 2, 0, 3)
    again = TextTokenizer.load(tmp_path / "tk")
    assert again.fingerprint() == tok.fingerprint()
    assert again.encode(ROUND_TRIP[2]) == tok.encode(ROUND_TRIP[2])


def test_jieba_pieces_concatenate_back():
    text = "Hello 世界!我们喜欢学习中文 2024年 😀"
    pieces = jieba_pieces(text)
    assert "".join(pieces) == text
    assert "我们" in pieces and "喜欢" in pieces and "Hello " in pieces


def _token_boundaries(t: TextTokenizer, ids: list[int]) -> set[int]:
    """Byte offsets where tokens end (a byte-level token string has one char per byte)."""
    ends, pos = set(), 0
    for piece in t.hf.convert_ids_to_tokens(ids):
        pos += len(piece)
        ends.add(pos)
    return ends


def _word_boundaries(text: str) -> set[int]:
    import jieba

    ends, pos = set(), 0
    for word in jieba.lcut(text, HMM=False):
        pos += len(word.encode("utf-8"))
        ends.add(pos)
    return ends


def test_jieba_tokens_respect_word_boundaries(tok_jieba, tmp_path):
    ids = tok_jieba.encode(SAMPLE_ZH)
    words = _word_boundaries(SAMPLE_ZH)
    assert words <= _token_boundaries(tok_jieba, ids)
    assert len(ids) < len(SAMPLE_ZH.encode("utf-8")), "merges happened inside words"
    # Control: plain BPE on the same corpus does merge across a jieba boundary.
    plain = TextTokenizer.train(make_corpus() + [SAMPLE_ZH] * 50, vocab_size=500)
    assert not words <= _token_boundaries(plain, plain.encode(SAMPLE_ZH))
    # save/load keeps jieba mode (and therefore the same ids).
    tok_jieba.save(tmp_path / "tj")
    loaded = TextTokenizer.load(tmp_path / "tj")
    assert loaded.jieba and loaded.encode(SAMPLE_ZH) == ids
    assert loaded.fingerprint() == tok_jieba.fingerprint() != plain.fingerprint()


def _foreign_folder(path, specials: dict[str, str]) -> None:
    """A GPT-2-like byte-level tokenizer with only the given special tokens."""
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=list(specials.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    raw.train_from_iterator(make_corpus(50), trainer)
    PreTrainedTokenizerFast(tokenizer_object=raw, **specials).save_pretrained(str(path))


def test_load_foreign_without_bos_pad_sep(tmp_path):
    _foreign_folder(tmp_path / "gpt2ish", {"eos_token": "<|endoftext|>"})
    t = TextTokenizer.load(tmp_path / "gpt2ish")
    eos = t.hf.convert_tokens_to_ids("<|endoftext|>")
    assert (t.eos_id, t.bos_id, t.pad_id, t.sep_id) == (eos, eos, eos, None)
    assert not t.jieba
    assert t.decode(t.encode("foreign text 中文")) == "foreign text 中文"


def test_load_foreign_without_eos_fails(tmp_path):
    _foreign_folder(tmp_path / "noeos", {"pad_token": "<p>"})
    with pytest.raises(UserError, match="no eos token"):
        TextTokenizer.load(tmp_path / "noeos")


def test_load_errors_name_the_path(tmp_path):
    with pytest.raises(UserError, match=r"missing: tokenizer folder not found"):
        TextTokenizer.load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"empty: could not load a tokenizer"):
        TextTokenizer.load(tmp_path / "empty")


def test_train_errors():
    with pytest.raises(UserError, match="must be >= 260"):
        TextTokenizer.train(["abc"], vocab_size=100)
    with pytest.raises(UserError, match="no documents"):
        TextTokenizer.train([], vocab_size=300)


def test_max_docs_limits_training(tok):
    small = TextTokenizer.train(make_corpus(), vocab_size=500, max_docs=4)
    assert small.vocab_size < tok.vocab_size
