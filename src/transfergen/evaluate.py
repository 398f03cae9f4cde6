"""Evaluate a model on a task: decode, score with the task's metrics, measure perplexity.

`transfergen evaluate --model RUN --task TASK.yaml --split test --out DIR` writes
`predictions.jsonl` (source, hypothesis, references) and `scores.json` (every score
with its signature, plus the target-token perplexity). The same pieces give the
fine-tuning loop its generation metrics on a fixed validation subset.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Callable

import torch

from .checks import check_values
from .config import EvalConfig, TaskConfig
from .data.seq2seq import prompt_ids, task_val_batches
from .data.readers import check_sources
from .data.tasks import Example, check_task_config, load_task
from .errors import UserError
from .folders import ensure_out_dir
from .generate import GenerationConfig, generate
from .io import write_json_atomic, write_text_atomic
from .metrics import compute, flatten
from .tokenizer import TextTokenizer
from .train import evaluate_loss

SPLITS = ("train", "val", "test")


def generation_config(ecfg: EvalConfig) -> GenerationConfig:
    """Deterministic decoding settings for evaluation (no sampling)."""
    return GenerationConfig(max_new_tokens=ecfg.max_new_tokens, num_beams=ecfg.num_beams,
                            length_penalty=ecfg.length_penalty, no_repeat_ngram_size=ecfg.no_repeat_ngram_size,
                            repetition_penalty=ecfg.repetition_penalty, batch_size=ecfg.batch_size)


def predict(model: torch.nn.Module, tok: TextTokenizer, task: TaskConfig, examples: list[Example],
            gcfg: GenerationConfig) -> list[str]:
    """Decode a hypothesis for every example: prompt [sep] -> generated target."""
    prompts = [prompt_ids(tok, task, ex.source) for ex in examples]
    outputs = generate(model, tok, prompts, gcfg)
    return [tok.decode(ids).strip() for ids in outputs]


def score(hypotheses: list[str], examples: list[Example], task: TaskConfig) -> dict:
    """The task's metrics, corpus-level, on the target language's tokenisation."""
    references = [ex.references for ex in examples]
    return compute(task.metrics, hypotheses, references, lang=task.target_lang)


def task_perplexity(model: torch.nn.Module, tok: TextTokenizer, task: TaskConfig,
                    examples: list[Example], batch_size: int = 32) -> float:
    """exp(mean loss per target token) over all `examples` (teacher forcing)."""
    batches = task_val_batches(examples, tok, task, batch_size, max_batches=10 ** 9)
    return math.exp(min(evaluate_loss(model, batches, next(model.parameters()).device), 50.0))


def text_perplexity(model: torch.nn.Module, tok: TextTokenizer, paths: list[str], seq_len: int = 256,
                    batch_size: int = 16) -> float:
    """exp(mean next-token loss) on text files, packed into blocks of `seq_len` like pretraining.

    Documents are framed [bos] doc [eos] and concatenated; the stream is cut into
    non-overlapping blocks (the last, partial block is dropped).
    """
    from .data.readers import iter_documents

    ids: list[int] = []
    for doc in iter_documents(paths):
        ids += [tok.bos_id, *tok.encode(doc), tok.eos_id]
    n = (len(ids) - 1) // seq_len
    if n < 1:
        raise UserError(f"too little text for one block of {seq_len} tokens in {', '.join(paths)}")
    return block_perplexity(model, ids, seq_len, n, batch_size)


def block_perplexity(model: torch.nn.Module, ids: list[int], seq_len: int, n: int, batch_size: int = 16) -> float:
    """exp(mean next-token loss) over the first `n` non-overlapping `seq_len` blocks of `ids`."""
    stream = torch.tensor(ids[: n * seq_len + 1])
    x, y = stream[:-1].view(n, seq_len), stream[1:].view(n, seq_len)  # (n, T): inputs, next tokens
    batches = [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, n, batch_size)]
    device = next(model.parameters()).device
    return math.exp(min(evaluate_loss(model, batches, device), 50.0))


def eval_hook(tok: TextTokenizer, task: TaskConfig, examples: list[Example],
              ecfg: EvalConfig) -> Callable[[torch.nn.Module], dict]:
    """For the loop: decode the fixed subset and return {metric: score} for metrics.jsonl."""
    subset, gcfg = examples[:ecfg.examples], generation_config(ecfg)

    def evaluate(model: torch.nn.Module) -> dict:
        return flatten(score(predict(model, tok, task, subset, gcfg), subset, task))
    return evaluate


def _check_request(task: TaskConfig, split: str, ecfg: EvalConfig, limit: int | None,
                   text: list[str] | None, device: str) -> torch.device:
    """What `run_evaluate` is asked for, checked before any work (library callers included);
    returns the device to decode on."""
    from .distributed import resolve_device

    dev = resolve_device(device, key="--device")
    if split not in SPLITS:
        raise UserError(f"unknown split '{split}' (expected one of {', '.join(SPLITS)})")
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be >= 1 (the number of examples scored), got {limit}")
    check_values(ecfg, "eval.")
    check_task_config(task)
    check_sources(text or [])
    return dev


def run_evaluate(model_dir: str, task: TaskConfig, split: str, out: str, ecfg: EvalConfig,
                 limit: int | None = None, text: list[str] | None = None, device: str = "auto") -> dict:
    """Decode and score `split` of `task` with the model at `model_dir` on `device` (auto: CUDA,
    then MPS, then CPU; in fp32); write the results. Everything that can be checked is, before
    the model loads: a bad value or device, a missing text file, an output folder that is a
    file or cannot be written."""
    from .hub import load_model

    dev = _check_request(task, split, ecfg, limit, text, device)
    out_dir = ensure_out_dir(out)
    model, tok = load_model(model_dir, device=dev), TextTokenizer.load(model_dir)
    examples = getattr(load_task(task), split)[:limit]
    hyps = predict(model, tok, task, examples, generation_config(ecfg))
    scores = score(hyps, examples, task)
    result = {"model": str(model_dir), "task": task.name, "split": split, "n": len(examples),
              "perplexity": task_perplexity(model, tok, task, examples, ecfg.batch_size),
              "scores": {name: s.to_dict() for name, s in scores.items()},
              "decoding": dataclasses.asdict(generation_config(ecfg))}
    if text:
        result["text_perplexity"] = text_perplexity(model, tok, text, min(256, model.max_seq_len or 256))
    rows = [json.dumps({"source": ex.source, "hypothesis": h, "references": ex.references}, ensure_ascii=False)
            for ex, h in zip(examples, hyps, strict=True)]
    write_text_atomic(out_dir / "predictions.jsonl", "\n".join(rows) + "\n")
    write_json_atomic(out_dir / "scores.json", result)
    return result
