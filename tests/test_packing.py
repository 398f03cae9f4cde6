"""Token cache (build/reuse/invalidate, splits, workers) and block sampling."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from transfergen.config import DataConfig
from transfergen.data.packing import prepare_corpus, token_dtype
from transfergen.data.sampling import BlockSampler, get_batch, val_batches
from transfergen.errors import UserError
from transfergen.tokenizer import TextTokenizer

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu 中文 数据".split()


def sentences(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(3, 12))) for _ in range(n)]


@pytest.fixture(scope="module")
def tok() -> TextTokenizer:
    return TextTokenizer.train(sentences(200), vocab_size=300)


@pytest.fixture
def corpus(tmp_path):
    p = tmp_path / "corpus.txt"
    p.write_text("\n".join(sentences(1200, seed=1)) + "\n", encoding="utf-8")
    return p


def split_docs(stream: np.ndarray, bos: int, eos: int) -> list[list[int]]:
    """Cut a packed stream back into documents, checking the bos..eos framing."""
    docs, cur = [], None
    for t in stream.tolist():
        if cur is None:
            assert t == bos
            cur = []
        elif t == eos:
            docs.append(cur)
            cur = None
        else:
            cur.append(t)
    assert cur is None, "stream ends mid-document"
    return docs


def test_build_structure_and_dtype(tok, corpus, tmp_path):
    data = DataConfig(corpus=[str(corpus)], val_fraction=0.1, num_workers=1)
    s = prepare_corpus(data, tok, tmp_path / "cache")
    assert not s.cached and s.train.dtype == np.uint16 and isinstance(s.train, np.memmap)
    assert not s.train.flags.writeable
    assert s.n_docs == 1200 == s.n_train_docs + s.n_val_docs and 60 < s.n_val_docs < 180
    train_docs = split_docs(np.asarray(s.train), tok.bos_id, tok.eos_id)
    val_docs = split_docs(np.asarray(s.val), tok.bos_id, tok.eos_id)
    assert (len(train_docs), len(val_docs)) == (s.n_train_docs, s.n_val_docs)
    texts = corpus.read_text(encoding="utf-8").splitlines()
    assert tok.decode(train_docs[0]) in texts and tok.decode(val_docs[0]) in texts
    meta = json.loads((tmp_path / "cache" / "meta.json").read_text())
    assert meta["val_split"] == "by_document" and meta["dtype"] == "uint16"
    assert sorted(os.listdir(tmp_path / "cache")) == [".lock", "meta.json", "train.bin", "val.bin"]
    assert token_dtype(65535) == np.uint16 and token_dtype(65536) == np.uint32


def test_cache_reused_then_invalidated(tok, corpus, tmp_path):
    data = DataConfig(corpus=[str(corpus)], num_workers=1)
    first = prepare_corpus(data, tok, tmp_path / "c")
    again = prepare_corpus(data, tok, tmp_path / "c")
    assert again.cached and np.array_equal(first.train, again.train)
    with open(corpus, "a", encoding="utf-8") as fh:
        fh.write("alpha beta new document\n")
    changed = prepare_corpus(data, tok, tmp_path / "c")
    assert not changed.cached and changed.n_docs == first.n_docs + 1
    other = DataConfig(corpus=[str(corpus)], num_workers=1, val_fraction=0.5)
    assert not prepare_corpus(other, tok, tmp_path / "c").cached


@pytest.mark.slow
@pytest.mark.parametrize("jieba", [False, True])
def test_workers_match_in_process(tok, tmp_path, jieba):
    p = tmp_path / "big.txt"
    p.write_text("\n".join(sentences(1500, seed=2)), encoding="utf-8")  # 3 chunks of 512
    if jieba:  # workers must pick jieba mode up from the saved side file
        tok = TextTokenizer.train(sentences(200), vocab_size=300, jieba=True)
    one = prepare_corpus(DataConfig(corpus=[str(p)], num_workers=1), tok, tmp_path / "w1")
    two = prepare_corpus(DataConfig(corpus=[str(p)], num_workers=2), tok, tmp_path / "w2")
    assert np.array_equal(one.train, two.train) and np.array_equal(one.val, two.val)
    assert one.n_val_docs == two.n_val_docs > 0
    assert sorted(os.listdir(tmp_path / "w2")) == [".lock", "meta.json", "train.bin", "val.bin"]


def test_single_document_falls_back_to_token_tail(tok, tmp_path):
    p = tmp_path / "one.txt"
    p.write_text(" ".join(sentences(40, seed=3)) + "\n", encoding="utf-8")
    s = prepare_corpus(DataConfig(corpus=[str(p)], val_fraction=0.1, num_workers=1), tok, tmp_path / "c")
    n = len(s.train) + len(s.val)
    assert s.n_docs == 1 and len(s.val) == int(np.ceil(0.1 * n)) and len(s.train) > 0
    whole = np.concatenate([s.train, s.val])
    assert whole[0] == tok.bos_id and whole[-1] == tok.eos_id
    assert json.loads((tmp_path / "c" / "meta.json").read_text())["val_split"] == "token_tail_fallback"


def test_zero_val_fraction_gives_empty_val(tok, corpus, tmp_path):
    s = prepare_corpus(DataConfig(corpus=[str(corpus)], val_fraction=0.0, num_workers=1), tok, tmp_path / "c")
    assert len(s.val) == 0 and s.n_train_docs == 1200
    with pytest.raises(UserError, match=r"raise data\.val_fraction"):
        val_batches(s.val, 8, 2, 2)


def test_empty_corpus_error(tok, tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("\n  \n", encoding="utf-8")
    b.write_text("", encoding="utf-8")
    with pytest.raises(UserError, match=r"corpus is empty: no non-empty documents in .*a\.txt, .*b\.txt"):
        prepare_corpus(DataConfig(corpus=[str(a), str(b)], num_workers=1), tok, tmp_path / "c")
    assert not (tmp_path / "c" / "meta.json").exists()
    with pytest.raises(UserError, match="file not found"):
        prepare_corpus(DataConfig(corpus=[str(tmp_path / "nope.txt")]), tok, tmp_path / "c")
    with pytest.raises(UserError, match="val_fraction"):
        prepare_corpus(DataConfig(corpus=[str(a)], val_fraction=1.0), tok, tmp_path / "c")


def test_corrupt_meta_triggers_rebuild(tok, corpus, tmp_path):
    data = DataConfig(corpus=[str(corpus)], num_workers=1)
    first = prepare_corpus(data, tok, tmp_path / "c")
    (tmp_path / "c" / "meta.json").write_text("{not json", encoding="utf-8")
    again = prepare_corpus(data, tok, tmp_path / "c")
    assert not again.cached and np.array_equal(first.train, again.train)


def test_sampler_covers_each_block_once_per_epoch():
    s = BlockSampler(n_tokens=10 * 8 + 1, block_size=8, seed=0)
    assert s.n_blocks == 10
    seen = np.concatenate([s.next_indices(5) for _ in range(2)])
    assert sorted(seen.tolist()) == list(range(10)) and s.epoch == 1 and s.pos == 0
    straddle = s.next_indices(15)  # the rest of epoch 1 then 5 of epoch 2
    assert sorted(straddle[:10].tolist()) == list(range(10)) and s.epoch_float == 2.5
    assert BlockSampler(n_tokens=80, block_size=8, seed=0).n_blocks == 9


def test_sampler_ranks_disjoint_and_union_equals_single_process():
    single = BlockSampler(1001, 10, seed=7)
    ranks = [BlockSampler(1001, 10, seed=7, rank=r, world_size=3) for r in range(3)]
    for _ in range(12):  # crosses several epochs (100 blocks, 12 per global step)
        parts = [r.next_indices(4) for r in ranks]
        assert np.array_equal(np.concatenate(parts), single.next_indices(12))
        assert len(set(np.concatenate(parts).tolist())) == 12


def test_sampler_resume_is_exact():
    a = BlockSampler(500, 7, seed=3)
    for _ in range(9):
        a.next_indices(6)
    state = a.state_dict()
    expected = [a.next_indices(6) for _ in range(20)]
    b = BlockSampler(500, 7, seed=3)
    b.load_state_dict(json.loads(json.dumps(state)))
    assert all(np.array_equal(x, b.next_indices(6)) for x in expected)
    with pytest.raises(UserError):
        BlockSampler(30, 7, seed=3).load_state_dict(state)


def test_sampler_too_few_tokens():
    with pytest.raises(UserError, match="training split has 8 tokens, fewer than one block of 9"):
        BlockSampler(8, 8, seed=0)


def test_get_batch_shift():
    tokens = np.arange(100, dtype=np.uint16)
    x, y = get_batch(tokens, np.array([3, 0]), 8)
    assert x.dtype == y.dtype == torch.int64 and x.shape == y.shape == (2, 8)
    assert x[0].tolist() == list(range(24, 32)) and y[0].tolist() == list(range(25, 33))
    assert torch.equal(x[:, 1:], y[:, :-1])


def test_val_batches_deterministic():
    tokens = np.arange(50, dtype=np.uint32)
    first = val_batches(tokens, 4, batch_size=3, max_batches=2)
    again = val_batches(tokens, 4, batch_size=3, max_batches=2)
    assert [b[0].shape[0] for b in first] == [3, 3]
    assert first[0][0][0].tolist() == [0, 1, 2, 3] and first[1][0][2].tolist() == [20, 21, 22, 23]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again, strict=True))
    tail = val_batches(tokens, 10, batch_size=3, max_batches=5)  # 4 blocks: 3 + 1
    assert [b[0].shape[0] for b in tail] == [3, 1]
    with pytest.raises(UserError, match="validation split has 4 tokens, fewer than one block of 5"):
        val_batches(tokens[:4], 4, 2, 1)
