"""What a training command checks before any work, beyond the field ranges `from_dict` checks.

    names        strategy entries, schedule, preset, data format, task reader and metrics:
                 each against the registry that defines it
    the machine  the device exists here and runs the dtype (`precision.resolve_dtype`)
    inputs       corpus files, the task file, the folders of init / model.like /
                 tokenizer.path (present, and asking to run no code of their own)
    coherence    best_metric is one of the evaluation's numbers and patience has one to
                 watch; vocab.add has text to learn from; a scratch model holds its sequences;
                 train.parallel=fsdp is not asked for what it cannot shard

Every problem is one line (`ConfigError` / `UserError`) naming the key or the file. The run
folder (a file in the way, the lock, a resume's drift) is `session.py`'s.
"""

from __future__ import annotations

import os
from pathlib import Path

from .checks import check_values
from .config import RunConfig
from .data.readers import check_sources
from .data.tasks import check_task_config, load_task_file
from .distributed import resolve_device
from .errors import ConfigError, UserError
from .io import refuse_custom_code
from .metrics import score_names
from .optim import schedule_for
from .precision import resolve_dtype
from .shape import resolve_shape
from .strategies import strategy_entries
from .tokenizer import check_vocab_size

VAL_NUMBERS = ("val_loss", "val_ppl")  # what every evaluation records


def check_run(cfg: RunConfig, command: str, folders: bool = True) -> None:
    """Every check of a `pretrain` or `finetune` config; raises on the first problem.
    `folders=False` skips the folders the run reads (a study's pretrained model, made first)."""
    check_values(cfg)
    resolve_dtype(cfg.train.dtype, resolve_device(cfg.train.device, int(os.environ.get("LOCAL_RANK", "0"))))
    schedule_for(cfg.train)
    if folders:
        _check_folders(cfg)
    if command == "pretrain":
        _check_pretrain(cfg)
    else:
        _check_finetune(cfg)
    _check_best_metric(cfg, command)
    _check_fsdp(cfg, command)


# What FSDP2 cannot do here: these hold parameters by reference (which sharding replaces) or
# run on rank 0 alone (a sharded forward needs every rank).
FSDP_REFUSED = {"gradual": "its hook flips requires_grad on parameters that sharding replaces",
                "l2sp": "its penalty holds the unsharded pretrained weights"}


def _check_fsdp(cfg: RunConfig, command: str) -> None:
    """train.parallel=fsdp with a strategy, decoding or dtype it cannot shard: one line now."""
    if cfg.train.parallel != "fsdp":
        return
    key = "config key 'train.parallel': fsdp"
    if cfg.train.dtype == "fp16":
        raise ConfigError(f"{key} does not take train.dtype=fp16 (its loss scaler is not shard-aware; use bf16)")
    if command != "finetune":
        return
    for name in strategy_entries(cfg.strategy.name):
        if name in FSDP_REFUSED:
            raise ConfigError(f"{key} cannot run strategy '{name}': {FSDP_REFUSED[name]} (use train.parallel=ddp)")
    if cfg.eval.generate:
        raise ConfigError(f"{key} cannot decode during training (eval.generate runs on rank 0 alone); "
                          "evaluate the saved model afterwards")


def _check_folders(cfg: RunConfig) -> None:
    """The folders the run reads exist and hold no code that transformers would run."""
    given = {"init": None if cfg.init == "scratch" else cfg.init, "model.like": cfg.model.like,
             "tokenizer.path": cfg.tokenizer.path}
    for key, value in given.items():
        if value is None:
            continue
        if not Path(value).is_dir():
            raise ConfigError(f"config key '{key}': folder '{value}' not found")
        refuse_custom_code(value)


def _trains_tokenizer(cfg: RunConfig) -> bool:
    """A scratch run with no tokenizer to borrow trains its own BPE."""
    return cfg.init == "scratch" and not cfg.model.like and not cfg.tokenizer.path


def _check_scratch_shape(cfg: RunConfig, length: int, key: str) -> None:
    """A model built from model.* (preset and overrides) is valid and holds `length` tokens."""
    if cfg.init != "scratch" or cfg.model.like:
        return
    shape = resolve_shape(cfg.model, cfg.tokenizer.vocab_size, 0, 0, 0)
    if length > shape.max_seq_len:
        raise ConfigError(f"config key '{key}' asks for sequences of {length} tokens, more than the "
                          f"model's max_seq_len {shape.max_seq_len}")


def _check_pretrain(cfg: RunConfig) -> None:
    if not cfg.data.corpus:
        raise UserError("no corpus given: pass --corpus FILE [FILE ...] or set data.corpus")
    check_sources(cfg.data.corpus, cfg.data.format, cfg.data.doc_sep)
    for path in cfg.data.exclude:  # a bad task file fails now, not after the tokenizer
        load_task_file(path)
    if cfg.vocab.add > 0 and cfg.init == "scratch":
        raise ConfigError("config key 'vocab.add' grows a pretrained model's vocabulary: set init to a run folder")
    _check_vocab(cfg)
    if _trains_tokenizer(cfg):
        check_vocab_size(cfg.tokenizer.vocab_size)
    _check_scratch_shape(cfg, cfg.train.seq_len, "train.seq_len")


def _check_vocab(cfg: RunConfig) -> None:
    """vocab.add and vocab.extend_from come together, and the files exist."""
    if cfg.vocab.add > 0 and not cfg.vocab.extend_from:
        raise ConfigError("config key 'vocab.extend_from' is empty but vocab.add > 0: name target-side files")
    if cfg.vocab.extend_from and cfg.vocab.add == 0:
        raise ConfigError("config key 'vocab.extend_from' is set, but vocab.add is 0: no token would be added")
    check_sources(cfg.vocab.extend_from, cfg.data.format, cfg.data.doc_sep)


def _check_finetune(cfg: RunConfig) -> None:
    if not cfg.task.path:
        raise UserError("no task given: pass --task TASK.yaml")
    check_task_config(cfg.task)
    strategy_entries(cfg.strategy.name)
    _check_vocab(cfg)
    if _trains_tokenizer(cfg):
        check_vocab_size(cfg.tokenizer.vocab_size)
    # [bos] prompt [sep] target(+eos): the longest sequence the encoder can produce
    _check_scratch_shape(cfg, cfg.task.max_source_tokens + cfg.task.max_target_tokens + 2, "task.max_source_tokens")


def _check_best_metric(cfg: RunConfig, command: str) -> None:
    """best_metric names a number every evaluation records; patience needs one to watch."""
    t = cfg.train
    if t.patience > 0 and t.best_metric is None:
        raise ConfigError("config key 'train.patience' is set, but train.best_metric is not: "
                          "early stopping needs a number to watch")
    if t.best_metric is None:
        return
    generated = command == "finetune" and cfg.eval.generate
    known = [*VAL_NUMBERS, *(score_names(cfg.task.metrics) if generated else [])]
    if t.best_metric not in known:
        hint = "" if generated or command != "finetune" else "; task metrics need eval.generate=true"
        raise ConfigError(f"config key 'train.best_metric': '{t.best_metric}' is not among the evaluation "
                          f"numbers ({', '.join(known)}){hint}")
