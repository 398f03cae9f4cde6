"""Pretraining (or continued pretraining) of a causal LM on a general corpus.

`init: RUN` continues from a pretrained folder (domain- or task-adaptive pretraining): its
weights and its tokenizer, optionally grown by `vocab.add` tokens learned from
`vocab.extend_from` (`vocab.py`, the machinery fine-tuning uses), on a fresh schedule.

Wires config -> tokenizer -> token cache -> model -> the one training loop. Under
torchrun, rank 0 trains the tokenizer and builds the cache while the other ranks
wait, then every rank memory-maps the same files.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from .config import RunConfig
from .data.packing import prepare_corpus, pretraining_documents
from .data.sampling import BlockSampler, get_batch, val_batches
from .distributed import DistInfo, barrier
from .errors import UserError
from .hub import load_model
from .preflight import check_run
from .session import build_initial_model, check_length, extend_vocab, resolve_tokenizer, session
from .train import train


class BlockBatches:
    """Packed corpus blocks for the loop: (x, y) = (block[:-1], block[1:]), each (B, T)."""

    def __init__(self, tokens: np.ndarray, block_size: int, batch_size: int, seed: int, info: DistInfo):
        self.tokens, self.block_size, self.batch_size = tokens, block_size, batch_size
        self.sampler = BlockSampler(len(tokens), block_size, seed, info.rank, info.world_size)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.sampler.next_indices(self.batch_size)
        return get_batch(self.tokens, idx, self.block_size)

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)


def corpus_docs(cfg: RunConfig) -> Iterator[str]:
    """The pretraining corpus' documents; an empty corpus is an error naming its files."""
    dc = cfg.data
    docs = iter(pretraining_documents(dc))
    first = next(docs, None)
    if first is None:
        raise UserError(f"corpus is empty: no non-empty documents in {', '.join(dc.corpus)}")
    return itertools.chain([first], docs)


def run_pretrain(cfg: RunConfig) -> dict:
    """Pretrain per `cfg`; returns the final trainer state. Works under torchrun."""
    check_run(cfg, "pretrain")  # every value, name, file and folder, before any work
    with session(cfg) as s:
        tok = resolve_tokenizer(cfg, s.run_dir, s.info, docs=lambda: corpus_docs(cfg))
        model = build_initial_model(cfg, tok)  # --init RUN: its weights, and its tokenizer above
        tok, model = extend_vocab(cfg, tok, model, s)  # before the cache: the corpus is encoded with the new tokens
        cache = Path(cfg.data.cache_dir or s.run_dir / "data")
        if s.info.is_main:  # rank 0 tokenizes; the others then map its cache
            splits = prepare_corpus(cfg.data, tok, cache)
        barrier(s.info)
        if not s.info.is_main:
            splits = prepare_corpus(cfg.data, tok, cache)
        if splits.n_excluded_docs and s.info.is_main:
            print(f"[transfergen] data.exclude: left out {splits.n_excluded_docs} documents sharing a 13-word "
                  "span (or a whole 8-12-word text) with the val/test text of "
                  f"{', '.join(cfg.data.exclude)}", flush=True)
        check_length(model, cfg.train.seq_len, "train.seq_len")
        if s.last_checkpoint is not None:
            model.load_state_dict(load_model(s.last_checkpoint, dtype=None).state_dict())
        t = cfg.train
        batches = BlockBatches(splits.train, t.seq_len, t.batch_size, t.seed, s.info)
        val = val_batches(splits.val, t.seq_len, t.batch_size, t.eval_batches)
        return train(model, tok, batches, val, t, s.run_dir, resume=cfg.resume, info=s.info, device=s.device)
