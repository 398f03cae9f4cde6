"""Pretraining (or continued pretraining) of a causal LM on a general corpus.

Wires config -> tokenizer -> token cache -> model -> the one training loop. Under
torchrun, rank 0 trains the tokenizer and builds the cache while the other ranks
wait, then every rank memory-maps the same files.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from .config import RunConfig
from .data.packing import BlockSampler, get_batch, prepare_corpus, val_batches
from .data.readers import iter_documents
from .distributed import DistInfo, barrier
from .errors import UserError
from .model import build_model, resolve_shape
from .hub import build_like, load_model
from .session import session
from .tokenizer import TextTokenizer
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
    docs = iter_documents(dc.corpus, dc.format, dc.text_field, dc.doc_sep)
    first = next(docs, None)
    if first is None:
        raise UserError(f"corpus is empty: no non-empty documents in {', '.join(dc.corpus)}")
    return itertools.chain([first], docs)


def resolve_tokenizer(cfg: RunConfig, run_dir: Path, info: DistInfo,
                      docs: Callable[[], Iterator[str]] | None = None) -> TextTokenizer:
    """The run's tokenizer: a given folder, the init (or `model.like`) model's, or a new BPE
    trained on the corpus (saved in the run, reused on resume)."""
    own = run_dir / "tokenizer"
    borrowed = cfg.tokenizer.path or (cfg.init if cfg.init != "scratch" else cfg.model.like)
    if borrowed:  # a given tokenizer, the pretrained model's, or the one of the model copied
        return TextTokenizer.load(borrowed)
    if info.is_main and not (own / "tokenizer.json").is_file():
        tc = cfg.tokenizer
        texts = docs() if docs is not None else corpus_docs(cfg)
        tok = TextTokenizer.train(itertools.islice(texts, tc.max_train_docs), tc.vocab_size,
                                  tc.min_frequency, jieba=tc.jieba)
        tmp = run_dir / "tokenizer.tmp"
        tok.save(tmp)
        os.replace(tmp, own)
    barrier(info)
    return TextTokenizer.load(own)


def build_initial_model(cfg: RunConfig, tok: TextTokenizer) -> torch.nn.Module:
    """Random weights from the preset (`init: scratch`) or a pretrained local checkpoint."""
    torch.manual_seed(cfg.train.seed)  # identical replicas on every rank
    if cfg.init == "scratch" and cfg.model.like:
        model = build_like(cfg.model.like, seed=cfg.train.seed)
    elif cfg.init == "scratch":
        shape = resolve_shape(cfg.model, tok.vocab_size, tok.bos_id, tok.eos_id, tok.pad_id)
        model = build_model(shape, seed=cfg.train.seed)
    else:
        model = load_model(cfg.init)
    return model


def check_length(model: torch.nn.Module, length: int, key: str) -> None:
    """Sequences longer than the model's positions would fail mid-run: refuse them now."""
    max_len = getattr(model, "max_seq_len", None)
    if max_len is not None and length > max_len:
        raise UserError(f"config key '{key}' asks for sequences of {length} tokens, more than the "
                        f"model's max_seq_len {max_len}")


def run_pretrain(cfg: RunConfig) -> dict:
    """Pretrain per `cfg`; returns the final trainer state. Works under torchrun."""
    if not cfg.data.corpus:
        raise UserError("no corpus given: pass --corpus FILE [FILE ...] or set data.corpus")
    with session(cfg) as s:
        tok = resolve_tokenizer(cfg, s.run_dir, s.info)
        cache = Path(cfg.data.cache_dir or s.run_dir / "data")
        if s.info.is_main:  # rank 0 tokenizes; the others then map its cache
            splits = prepare_corpus(cfg.data, tok, cache)
        barrier(s.info)
        if not s.info.is_main:
            splits = prepare_corpus(cfg.data, tok, cache)
        model = build_initial_model(cfg, tok)
        check_length(model, cfg.train.seq_len, "train.seq_len")
        if s.last_checkpoint is not None:
            model.load_state_dict(load_model(s.last_checkpoint).state_dict())
        t = cfg.train
        batches = BlockBatches(splits.train, t.seq_len, t.batch_size, t.seed, s.info)
        val = val_batches(splits.val, t.seq_len, t.batch_size, t.eval_batches)
        return train(model, tok, batches, val, t, s.run_dir, resume=cfg.resume, info=s.info, device=s.device)
