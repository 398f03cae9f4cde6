"""Decoder-only formulation of a (source -> target) task, and its batches.

One example is one sequence:

    [bos] prompt(source) [sep] target [eos]

where `prompt` is `cfg.prompt` with `{source}` filled in and `sep` is the tokenizer's
separator (its eos when it has none, as with GPT-2 style tokenizers). Generation
feeds `prompt_ids(...)` and samples until eos. With `loss_on="target"` only target
and eos carry labels; with `"all"` every token after bos does (the prompt is then
also language-modelled).

`TaskBatches` is the fine-tuning `BatchSource`: pre-encoded examples, a seeded per-epoch
order shared by all ranks (`IndexSampler`), right padding to the batch's longest.
"""

from __future__ import annotations

import json
import logging
import string

import numpy as np
import torch

from ..config import TaskConfig
from ..errors import UserError
from ..tokenizer import TextTokenizer
from .sampling import IndexSampler
from .tasks import Example

IGNORE_INDEX = -100  # same value as loss.IGNORE_INDEX (kept local: no torch import)
log = logging.getLogger(__name__)


def format_prompt(cfg: TaskConfig, source: str) -> str:
    """The text before the separator: `cfg.prompt` with `{source}` filled in."""
    return cfg.prompt.format(source=source)


def sep_id(tok: TextTokenizer) -> int:
    """The prompt/target separator: `tok.sep_id`, or eos for tokenizers without one."""
    return tok.sep_id if tok.sep_id is not None else tok.eos_id


def _prompt_tokens(tok: TextTokenizer, cfg: TaskConfig, source: str) -> tuple[list[int], bool]:
    """Prompt ids cut from the end to `max_source_tokens`, and whether a cut happened."""
    ids = tok.encode(format_prompt(cfg, source))
    return ids[:cfg.max_source_tokens], len(ids) > cfg.max_source_tokens


def prompt_ids(tok: TextTokenizer, cfg: TaskConfig, source: str) -> list[int]:
    """What generation starts from: [bos] + prompt + [sep] (prompt truncated as in training)."""
    ids, _ = _prompt_tokens(tok, cfg, source)
    return [tok.bos_id, *ids, sep_id(tok)]


def chat_template(tok: TextTokenizer, cfg: TaskConfig) -> str:
    """A Jinja chat template that writes a user message as training wrote the prompt,
    [bos] prompt(content) [sep], and an assistant message as target [eos]: what a
    fine-tuned folder records, so that plain transformers prompts it the same way.

    Literal text goes in as Jinja string literals (never as template text), so quotes,
    braces and newlines in the prompt cannot change the template's meaning."""
    bos, sep, eos = tok.hf.convert_ids_to_tokens([tok.bos_id, sep_id(tok), tok.eos_id])
    user = [_literal(bos)]
    for text, field_name, _, _ in string.Formatter().parse(cfg.prompt):
        user.append(_literal(text) if text else "")
        if field_name is not None:  # `{source}` (check_task_config allows no other field)
            user.append("{{ message['content'] }}")
    user.append(_literal(sep))
    return ("{% for message in messages %}{% if message['role'] == 'user' %}" + "".join(user)
            + "{% elif message['role'] == 'assistant' %}{{ message['content'] }}" + _literal(eos)
            + "{% endif %}{% endfor %}")


def _literal(text: str) -> str:
    """`text` as a Jinja expression printing it (JSON string escapes are Jinja's too)."""
    return "{{ " + json.dumps(text, ensure_ascii=False) + " }}"


def recorded_prompt_ids(tok: TextTokenizer, sources: list[str]) -> list[list[int]]:
    """[bos] prompt [sep] for each source, in the format the model's folder records
    (`TextTokenizer.task_format`, written by fine-tuning); UserError for a folder without one."""
    fmt = tok.task_format
    if not fmt:
        raise UserError("this model records no task format (fine-tuned models do): give --prompt instead")
    cfg = TaskConfig(prompt=str(fmt["prompt"]), max_source_tokens=int(fmt["max_source_tokens"]))
    return [prompt_ids(tok, cfg, s) for s in sources]


def encode_example(tok: TextTokenizer, cfg: TaskConfig, ex: Example) -> tuple[list[int], list[int], bool]:
    """(ids, labels, truncated) for one example; ids = [bos] prompt [sep] target [eos].

    Truncation: the prompt keeps its first `max_source_tokens` tokens (cut from its
    end); the target keeps its first `max_target_tokens - 1` tokens and the eos is
    always appended, so target + eos <= max_target_tokens and the whole sequence is at
    most max_source_tokens + max_target_tokens + 2 long. `truncated` is True if either
    was cut. Labels equal ids except IGNORE_INDEX (-100) on bos, prompt and sep when
    `loss_on == "target"`, and on bos only when `loss_on == "all"`.
    """
    return _assemble(tok, cfg, tok.encode(format_prompt(cfg, ex.source)), tok.encode(ex.target))


def _assemble(tok: TextTokenizer, cfg: TaskConfig, prompt: list[int],
              target: list[int]) -> tuple[list[int], list[int], bool]:
    """`encode_example` from the untruncated prompt and target ids."""
    keep = cfg.max_target_tokens - 1
    head = [tok.bos_id, *prompt[:cfg.max_source_tokens], sep_id(tok)]
    tail = [*target[:keep], tok.eos_id]
    ids = head + tail
    if cfg.loss_on == "all":
        labels = [IGNORE_INDEX, *ids[1:]]
    else:
        labels = [IGNORE_INDEX] * len(head) + tail
    return ids, labels, len(prompt) > cfg.max_source_tokens or len(target) > keep


def collate(encoded: list[tuple[list[int], list[int]]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y), each (B, T) int64 with T = longest length - 1: x = ids[:-1], y = labels[1:].

    x is right-padded with `pad_id`, y with IGNORE_INDEX, so padding never has a loss.
    """
    width = max(len(ids) for ids, _ in encoded) - 1
    x = np.full((len(encoded), width), pad_id, dtype=np.int64)
    y = np.full((len(encoded), width), IGNORE_INDEX, dtype=np.int64)
    for i, (ids, labels) in enumerate(encoded):
        # Position t reads ids[t] and is scored on predicting labels[t + 1].
        x[i, :len(ids) - 1] = ids[:-1]
        y[i, :len(labels) - 1] = labels[1:]
    return torch.from_numpy(x), torch.from_numpy(y)


def encode_examples(examples: list[Example], tok: TextTokenizer,
                    cfg: TaskConfig) -> tuple[list[tuple[list[int], list[int]]], int]:
    """Every example encoded (as `encode_example`, batched), and how many were truncated."""
    prompts = tok.encode_batch([format_prompt(cfg, ex.source) for ex in examples])
    targets = tok.encode_batch([ex.target for ex in examples])
    encoded, n_truncated = [], 0
    for prompt, target in zip(prompts, targets, strict=True):
        ids, labels, cut = _assemble(tok, cfg, prompt, target)
        encoded.append((ids, labels))
        n_truncated += cut
    return encoded, n_truncated


class TaskBatches:
    """`BatchSource` over task examples: seeded epochs, exact resume, DDP rank slices."""

    def __init__(self, examples: list[Example], tok: TextTokenizer, cfg: TaskConfig,
                 batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        self.encoded, self.n_truncated = encode_examples(examples, tok, cfg)
        if self.n_truncated:
            log.info("task '%s': %d of %d training examples truncated (max_source_tokens=%d, "
                     "max_target_tokens=%d)", cfg.name, self.n_truncated, len(examples),
                     cfg.max_source_tokens, cfg.max_target_tokens)
        self.batch_size, self.pad_id = batch_size, tok.pad_id
        if batch_size < 1:
            raise UserError(f"batch size must be positive, got {batch_size}")
        self.sampler = IndexSampler(len(self.encoded), seed, rank, world_size, unit="training examples",
                                    hint="(did the task data change?)")

    def __len__(self) -> int:
        return len(self.encoded)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's next (x, y) batch, each (batch_size, T) int64."""
        idx = self.sampler.next_indices(self.batch_size)
        return collate([self.encoded[i] for i in idx], self.pad_id)

    @property
    def epoch_float(self) -> float:
        """Epochs completed so far, fractional."""
        return self.sampler.epoch_float

    def state_dict(self) -> dict:
        """The sampler position; with the same examples and seed it resumes exactly."""
        return {**self.sampler.state_dict(), "n_examples": len(self.encoded)}

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict()`; refuses a state saved for a different number of examples."""
        n = int(state.get("n_examples", len(self.encoded)))
        if n != len(self.encoded):
            raise UserError(f"batch state was saved for {n} training examples, the task now has "
                            f"{len(self.encoded)} (did the task data or split change?)")
        self.sampler.load_state_dict(state)


def task_val_batches(examples: list[Example], tok: TextTokenizer, cfg: TaskConfig,
                     batch_size: int, max_batches: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first `batch_size * max_batches` examples, in order: the same batches every time."""
    encoded, _ = encode_examples(examples[:batch_size * max_batches], tok, cfg)
    return [collate(encoded[i:i + batch_size], tok.pad_id) for i in range(0, len(encoded), batch_size)]
