"""Transfer to a target task (or train it from scratch) on the one training loop.

    init      pretrained folder -> load it; `scratch` -> same architecture, random weights
    vocab     optionally learn N target tokens and grow the input/output layers
    task      data + prompt format: prompt [sep] target [eos], loss on the target
    strategy  registry entries that set requires_grad, lr groups and hooks
    train     the loop shared with pretraining

Transfer and scratch differ only in `init`: the tokenizer, shape, data order, budget and
strategy machinery are the same, so the comparison measures the initial weights alone.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from .checkpoint import load_training_weights
from .config import RunConfig
from .data.seq2seq import TaskBatches, chat_template, task_val_batches
from .data.tasks import Example, TaskData, load_task
from .hub import load_model
from .session import Session, build_initial_model, check_length, extend_vocab, resolve_tokenizer, session
from .preflight import check_run
from .strategies import apply_strategy
from .train import train


def subset(examples: list[Example], n: int | None, seed: int) -> list[Example]:
    """A fixed, seeded subset of n examples (the same for every arm and training seed)."""
    if n is None or n >= len(examples):
        return examples
    idx = sorted(random.Random(seed).sample(range(len(examples)), n))
    return [examples[i] for i in idx]


def _task_texts(data: TaskData):
    """Sources and targets of the training split: a scratch run's tokenizer corpus."""
    return lambda: (t for ex in data.train for t in (ex.source, ex.target) if t.strip())


def _base_folder(cfg: RunConfig) -> str | None:
    """The model folder whose weights the run starts from (LoRA's adapter names it); None for
    scratch, and for a grown vocabulary, which no longer is that folder's model."""
    return cfg.init if cfg.init != "scratch" and cfg.vocab.add == 0 else None


def _restore_weights(model: torch.nn.Module, ckpt: Path) -> None:
    """Resume: the raw training weights if saved (LoRA), else the checkpoint's model."""
    if not load_training_weights(ckpt, model):
        model.load_state_dict(load_model(ckpt, dtype=None).state_dict())


def _log_setup(s: Session, summary: dict, batches: TaskBatches, data: TaskData) -> dict:
    """Print what the strategy did; return it for the run's first metrics record."""
    record = {"init": s.cfg.init, "strategy": s.cfg.strategy.name, "train_examples": len(batches),
              "val_examples": len(data.val), "truncated_examples": batches.n_truncated,
              "strategy_log": summary.get("log", [])}
    if s.info.is_main:
        for line in summary.get("log", []):
            print(f"[transfergen] {line}", flush=True)
        print(f"[transfergen] {len(batches)} training examples, {batches.n_truncated} truncated "
              f"(prompt > {s.cfg.task.max_source_tokens} or target > {s.cfg.task.max_target_tokens} tokens)",
              flush=True)
    return record


def run_finetune(cfg: RunConfig) -> dict:
    """Fine-tune `cfg.init` (or train from scratch) on `cfg.task`; returns the trainer state."""
    check_run(cfg, "finetune")  # every value, name, file and folder, before any work
    with session(cfg) as s:  # the run folder is locked, and a resume's drift refused, before the data loads
        data = load_task(cfg.task)
        tok = resolve_tokenizer(cfg, s.run_dir, s.info, docs=_task_texts(data))
        model = build_initial_model(cfg, tok)
        # [bos] prompt [sep] target(+eos): the longest sequence the encoder can produce
        check_length(model, cfg.task.max_source_tokens + cfg.task.max_target_tokens + 2,
                     "task.max_source_tokens")
        tok, model = extend_vocab(cfg, tok, model, s)
        # Saved with every checkpoint: transfergen generate --source and HF's chat template prompt alike.
        tok.set_task_format(cfg.task.prompt, cfg.task.max_source_tokens, chat_template(tok, cfg.task))
        result = apply_strategy(model, cfg.strategy, cfg.train, base=_base_folder(cfg))
        if s.last_checkpoint is not None:
            _restore_weights(model, s.last_checkpoint)
        t = cfg.train
        train_ex = subset(data.train, t.max_examples, cfg.task.split_seed)
        batches = TaskBatches(train_ex, tok, cfg.task, t.batch_size, t.seed, s.info.rank, s.info.world_size)
        val = task_val_batches(data.val, tok, cfg.task, t.batch_size, t.eval_batches)
        if cfg.eval.generate:  # decode + score the fixed val subset at every evaluation
            from .evaluate import eval_hook

            result.hooks.evaluate = eval_hook(tok, cfg.task, data.val, cfg.eval)
        setup = _log_setup(s, result.summary, batches, data)
        return train(model, tok, batches, val, t, s.run_dir, groups=result.groups, hooks=result.hooks,
                     resume=cfg.resume, info=s.info, device=s.device, setup_info=setup)
