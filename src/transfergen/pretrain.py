"""Pretraining (or continued pretraining) of a causal LM on a general corpus.

Wires config -> tokenizer -> token cache -> model -> the one training loop. Under
torchrun, rank 0 trains the tokenizer and builds the cache while the other ranks
wait, then every rank memory-maps the same files.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import torch

from .checkpoint import latest_checkpoint
from .config import RunConfig, save_yaml
from .data.packing import BlockSampler, get_batch, prepare_corpus, val_batches
from .data.readers import iter_documents
from .distributed import DistInfo, barrier, init_distributed, pick_device, shutdown
from .errors import UserError
from .model import build_model, load_model, resolve_shape
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


def check_run_dir(cfg: RunConfig) -> Path:
    """Refuse to overwrite a run that already has checkpoints unless resuming."""
    run_dir = Path(cfg.out)
    last = latest_checkpoint(run_dir)
    if last is not None and not cfg.resume:
        raise UserError(f"already holds a run (last checkpoint {last.name}); pass --resume to continue "
                        "it or choose another --out", path=str(run_dir))
    if cfg.resume and last is None:
        raise UserError("--resume given but the run has no checkpoint to resume from", path=str(run_dir))
    return run_dir


def resolve_tokenizer(cfg: RunConfig, run_dir: Path, info: DistInfo) -> TextTokenizer:
    """The run's tokenizer: its own saved one, a given folder, the init model's, or a new BPE."""
    own = run_dir / "tokenizer"
    if cfg.tokenizer.path:
        return TextTokenizer.load(cfg.tokenizer.path)
    if cfg.init != "scratch":
        return TextTokenizer.load(cfg.init)
    if info.is_main and not (own / "tokenizer.json").is_file():
        tc, dc = cfg.tokenizer, cfg.data
        docs = iter_documents(dc.corpus, dc.format, dc.text_field, dc.doc_sep)
        first = next(docs, None)
        if first is None:
            raise UserError(f"corpus is empty: no non-empty documents in {', '.join(dc.corpus)}")
        docs = itertools.chain([first], docs)
        tok = TextTokenizer.train(itertools.islice(docs, tc.max_train_docs), tc.vocab_size,
                                  tc.min_frequency, jieba=tc.jieba)
        tmp = run_dir / "tokenizer.tmp"
        tok.save(tmp)
        os.replace(tmp, own)
    barrier(info)
    return TextTokenizer.load(own)


def build_initial_model(cfg: RunConfig, tok: TextTokenizer) -> torch.nn.Module:
    """Random weights from the preset (`init: scratch`) or a pretrained local checkpoint."""
    torch.manual_seed(cfg.train.seed)  # identical replicas on every rank
    if cfg.init == "scratch":
        shape = resolve_shape(cfg.model, tok.vocab_size, tok.bos_id, tok.eos_id, tok.pad_id)
        model = build_model(shape, seed=cfg.train.seed)
    else:
        model = load_model(cfg.init)
    max_len = getattr(model, "max_seq_len", None)
    if max_len is not None and cfg.train.seq_len > max_len:
        raise UserError(f"config key 'train.seq_len' = {cfg.train.seq_len} exceeds the model's "
                        f"max_seq_len {max_len}")
    return model


def _set_threads(cfg: RunConfig, info: DistInfo, device: torch.device) -> None:
    threads = cfg.train.threads
    if threads is None and info.enabled and device.type == "cpu":
        # Each rank gets its share of the cores; oversubscription makes gloo crawl.
        threads = max(1, (os.cpu_count() or 1) // info.world_size)
    if threads:
        torch.set_num_threads(threads)


def run_pretrain(cfg: RunConfig) -> dict:
    """Pretrain per `cfg`; returns the final trainer state. Works under torchrun."""
    if not cfg.data.corpus:
        raise UserError("no corpus given: pass --corpus FILE [FILE ...] or set data.corpus")
    device = pick_device(cfg.train.device, int(os.environ.get("LOCAL_RANK", "0")))
    info = init_distributed(device)
    try:
        _set_threads(cfg, info, device)
        run_dir = check_run_dir(cfg)
        if info.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            save_yaml(cfg, run_dir / "run_config.yaml")
        barrier(info)
        tok = resolve_tokenizer(cfg, run_dir, info)
        cache = Path(cfg.data.cache_dir or run_dir / "data")
        if info.is_main:
            splits = prepare_corpus(cfg.data, tok, cache)
        barrier(info)
        if not info.is_main:
            splits = prepare_corpus(cfg.data, tok, cache)  # reuses rank 0's cache
        model = build_initial_model(cfg, tok)
        last = latest_checkpoint(run_dir) if cfg.resume else None
        if last is not None:
            model.load_state_dict(load_model(last).state_dict())
        t = cfg.train
        batches = BlockBatches(splits.train, t.seq_len, t.batch_size, t.seed, info)
        val = val_batches(splits.val, t.seq_len, t.batch_size, t.eval_batches)
        return train(model, tok, batches, val, t, run_dir, resume=cfg.resume, info=info, device=device)
    finally:
        shutdown(info)
