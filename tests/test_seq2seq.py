"""Decoder-only task encoding: layout, masking, truncation, batches, resume, ranks."""

from __future__ import annotations

import json

import pytest
import torch

from transfergen.config import TaskConfig
from transfergen.data.seq2seq import (IGNORE_INDEX, TaskBatches, encode_example, format_prompt,
                                      prompt_ids, task_val_batches)
from transfergen.data.tasks import Example
from transfergen.errors import UserError
from transfergen.tokenizer import TextTokenizer

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa 中文 数据".split()


@pytest.fixture(scope="module")
def tok() -> TextTokenizer:
    docs = [" ".join(WORDS[i % len(WORDS):] + WORDS[:i % len(WORDS)]) for i in range(50)]
    return TextTokenizer.train(docs, vocab_size=300)


def examples(n: int) -> list[Example]:
    return [Example(" ".join(WORDS[:1 + i % 5]), " ".join(WORDS[-1 - i % 7:])) for i in range(n)]


def test_layout_and_masking_target(tok):
    cfg = TaskConfig(prompt="{source} =")
    ex = Example("alpha beta", "gamma delta")
    ids, labels, cut = encode_example(tok, cfg, ex)
    p, t = tok.encode(format_prompt(cfg, ex.source)), tok.encode(ex.target)
    assert format_prompt(cfg, "x") == "x ="
    assert ids == [tok.bos_id, *p, tok.sep_id, *t, tok.eos_id] and not cut
    assert labels == [IGNORE_INDEX] * (len(p) + 2) + t + [tok.eos_id]
    assert prompt_ids(tok, cfg, ex.source) == ids[:len(p) + 2]


def test_masking_all(tok):
    cfg = TaskConfig(loss_on="all")
    ids, labels, _ = encode_example(tok, cfg, Example("alpha", "beta"))
    assert labels == [IGNORE_INDEX, *ids[1:]]


def test_truncation_rule_and_count(tok):
    cfg = TaskConfig(max_source_tokens=3, max_target_tokens=4)
    long_src, long_tgt = " ".join(WORDS), " ".join(reversed(WORDS))
    ids, _labels, cut = encode_example(tok, cfg, Example(long_src, long_tgt))
    p, t = tok.encode(long_src), tok.encode(long_tgt)
    assert cut and ids == [tok.bos_id, *p[:3], tok.sep_id, *t[:3], tok.eos_id]
    assert len(ids) == cfg.max_source_tokens + cfg.max_target_tokens + 2
    assert prompt_ids(tok, cfg, long_src) == ids[:5]
    _, _, cut_short = encode_example(tok, cfg, Example("alpha", "beta"))
    assert not cut_short
    batches = TaskBatches([Example(long_src, "beta"), Example("alpha", "beta"), Example("a", long_tgt)],
                          tok, cfg, batch_size=2, seed=0)
    assert batches.n_truncated == 2


def test_sep_falls_back_to_eos(tok):
    class NoSep:  # a foreign tokenizer without a separator token
        def __getattr__(self, name):
            return None if name == "sep_id" else getattr(tok, name)
    ids, _, _ = encode_example(NoSep(), TaskConfig(), Example("alpha", "beta"))
    n = len(tok.encode("alpha"))
    assert ids[n + 1] == tok.eos_id


def test_batches_pad_and_shift(tok):
    cfg = TaskConfig()
    exs = examples(10)
    b = TaskBatches(exs, tok, cfg, batch_size=4, seed=0)
    x, y = b.next_batch()
    assert x.dtype == y.dtype == torch.int64 and x.shape == y.shape and x.shape[0] == 4
    for i in range(4):
        labelled = (y[i] != IGNORE_INDEX).nonzero().flatten().tolist()
        n = labelled[-1] + 1  # real length of row i (x = ids[:-1]); the rest is padding
        # Next-token alignment: the label at t is the token read at t+1, eos closes the row.
        assert all(x[i, t + 1] == y[i, t] for t in labelled if t + 1 < n)
        assert y[i, n - 1] == tok.eos_id and x[i, 0] == tok.bos_id
        assert (x[i, n:] == tok.pad_id).all() and (y[i, n:] == IGNORE_INDEX).all()
        assert x[i, labelled[0]] == tok.sep_id  # the sep position predicts the first target token
    assert (y != IGNORE_INDEX).sum(1).min() > 0 and (x[:, -1] != tok.pad_id).any()


def test_batch_rows_are_shifted_encodings(tok):
    cfg = TaskConfig(loss_on="all")
    exs = examples(3)
    (x, y), = task_val_batches(exs, tok, cfg, batch_size=3, max_batches=1)
    for i, ex in enumerate(exs):
        ids, labels, _ = encode_example(tok, cfg, ex)
        n = len(ids) - 1
        assert x[i, :n].tolist() == ids[:-1] and y[i, :n].tolist() == labels[1:]


def test_batch_width_is_longest_in_batch(tok):
    cfg = TaskConfig()
    exs = [Example("alpha", "beta"), Example("alpha beta gamma delta", "beta gamma delta epsilon")]
    (x, _y), = task_val_batches(exs, tok, cfg, batch_size=2, max_batches=3)
    longest = encode_example(tok, cfg, exs[1])[0]
    assert x[1].tolist() == longest[:-1] and x.shape[1] == len(longest) - 1


def test_every_example_once_per_epoch(tok):
    b = TaskBatches(examples(12), tok, TaskConfig(), batch_size=4, seed=5)
    seen = [tuple(row.tolist()) for _ in range(3) for row in b.next_batch()[0]]
    assert len(seen) == 12 and b.epoch_float == 1.0


def test_exact_resume(tok):
    exs = examples(23)
    a = TaskBatches(exs, tok, TaskConfig(), batch_size=5, seed=3)
    for _ in range(7):
        a.next_batch()
    state = json.loads(json.dumps(a.state_dict()))
    expected = [a.next_batch() for _ in range(10)]
    b = TaskBatches(exs, tok, TaskConfig(), batch_size=5, seed=3)
    b.load_state_dict(state)
    for x, y in expected:
        bx, by = b.next_batch()
        assert torch.equal(x, bx) and torch.equal(y, by)
    with pytest.raises(UserError, match="saved for 23 training examples"):
        TaskBatches(exs[:10], tok, TaskConfig(), batch_size=5, seed=3).load_state_dict(state)


def test_rank_slices_disjoint_and_cover_single_process(tok):
    exs = [Example(f"alpha {i}", f"beta {i}") for i in range(30)]
    cfg = TaskConfig()

    def rows(batch) -> list[tuple]:
        x, _ = batch
        return [tuple(r[r != tok.pad_id].tolist()) for r in x]
    single = TaskBatches(exs, tok, cfg, batch_size=6, seed=1)
    ranks = [TaskBatches(exs, tok, cfg, batch_size=2, seed=1, rank=r, world_size=3) for r in range(3)]
    for _ in range(5):
        parts = [rows(r.next_batch()) for r in ranks]
        flat = [row for part in parts for row in part]
        assert len(set(flat)) == 6 and sorted(flat) == sorted(rows(single.next_batch()))


def test_val_batches_fixed(tok):
    exs = examples(11)
    first = task_val_batches(exs, tok, TaskConfig(), batch_size=4, max_batches=2)
    again = task_val_batches(exs, tok, TaskConfig(), batch_size=4, max_batches=2)
    assert len(first) == 2 and [x.shape[0] for x, _ in first] == [4, 4]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again, strict=True))
    assert len(task_val_batches(exs, tok, TaskConfig(), batch_size=4, max_batches=9)) == 3
