"""The one training loop: pretraining, fine-tuning and from-scratch baselines.

What differs between those runs lives outside this file: the initial weights
(`init: scratch | PATH`), the batches (packed corpus blocks or prompt/target
pairs with masked labels), and the strategy's parameter groups and hooks. The
loop only knows AdamW, a schedule multiplier, clipping, accumulation, evaluation,
logging and atomic checkpoints; it runs data-parallel under torchrun unchanged.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from tqdm import tqdm

from . import checkpoint as ckpt
from .config import TrainConfig
from .errors import ConfigError
from .distributed import DistInfo, any_rank_true, replica_divergence
from .hooks import Hooks, ParamGroup, describe_groups
from .io import MetricsLog
from .loss import IGNORE_INDEX
from .optim import apply_lr, build_optimizer, clip_gradients, default_param_groups, schedule_for
from .parallel import Parallel
from .precision import Precision, autocast, resolve_dtype


class BatchSource(Protocol):
    """Yields (inputs, labels), each (B, T) int64, and can save/restore its position."""

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


@torch.no_grad()
def evaluate_loss(model: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]],
                  device: torch.device, dtype: str = "fp32") -> float:
    """Token-weighted mean loss over fixed validation batches (perplexity = exp of it).

    `dtype` is a resolved training dtype (fp32 | bf16 | fp16): validation during training
    runs as the training forward does; `evaluate` calls this in fp32."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        with autocast(device, dtype):
            loss = model(x, labels=y)  # the model's loss (loss.py), chunked: no fp32 (B,T,V) logits
        n = int((y != IGNORE_INDEX).sum())
        total += float(loss) * n
        count += n
    model.train(was_training)
    return total / max(count, 1)


def log_param_summary(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The run's first metrics record: trainable/frozen counts and each group's base lr."""
    return {"event": "setup", "step": 0, **describe_groups(model, optimizer.param_groups)}


@dataclass
class _Run:
    """Mutable loop state; everything in `state` goes into trainer_state.json."""

    model: torch.nn.Module  # possibly DDP-wrapped
    raw: torch.nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Callable[[int], float]
    metrics: MetricsLog
    state: dict[str, Any]
    precision: Precision
    par: Parallel  # DDP replicas or FSDP2 shards: syncing, consolidating for checkpoints

    def flops_per_token(self, seq_len: int) -> float:
        """The model's training-FLOPs estimate (6 x parameters for a model without one), less
        the weight gradients frozen matrices skip: a frozen weight still costs its forward (2)
        and the gradient to its input (2), but not its own gradient (2). So LoRA counts 4 per
        base weight + 6 per adapter weight, not 6 for everything."""
        fn = getattr(self.raw, "flops_per_token", None)
        full = fn(seq_len) if fn else 6.0 * sum(p.numel() for p in self.raw.parameters())
        frozen = sum(p.numel() for p in self.raw.parameters() if not p.requires_grad and p.dim() >= 2)
        return full - 2.0 * frozen


def _setup(model, batches, cfg: TrainConfig, run_dir: Path, groups: list[ParamGroup] | None, resume: bool,
           info: DistInfo, device: torch.device) -> _Run:
    groups = groups if groups is not None else default_param_groups(model, cfg.lr, cfg.weight_decay)
    names = {id(p): n for n, p in model.named_parameters()}  # FSDP2 replaces the parameters: remap by name
    par = Parallel(model, cfg.parallel, info, device, cfg.activation_checkpointing)
    optimizer = build_optimizer(par.remap(groups, names), cfg)
    state: dict[str, Any] = {"step": 0, "tokens": 0, "flops": 0.0, "elapsed_s": 0.0}
    last = ckpt.latest_checkpoint(run_dir) if resume else None
    ckpt.recover_best(run_dir)
    if last is not None:
        state, tensors = ckpt.load_training_state(last)
        par.load_optimizer_state(optimizer, tensors["optimizer"])
        ckpt.restore_rng(tensors)
        batches.load_state_dict(state["data"])
        _say(info, f"resumed from {last} at step {state['step']}")
    precision = Precision.for_run(resolve_dtype(cfg.dtype, device), device)
    precision.load_state_dict(state.get("grad_scaler"))
    metrics = MetricsLog(run_dir, info.is_main, truncate_after=state["step"] if resume else None,
                         report_to=cfg.report_to)
    called = torch.compile(par.model) if cfg.compile else par.model  # par.raw still saves and evaluates
    return _Run(called, par.raw, optimizer, schedule_for(cfg), metrics, state, precision, par)


def _say(info: DistInfo, msg: str) -> None:
    if info.is_main:
        tqdm.write(f"[transfergen] {msg}", file=sys.stderr)


def _train_step(run: _Run, batches: BatchSource, cfg: TrainConfig, hooks: Hooks,
                device: torch.device) -> tuple[float, float, int, float]:
    """One optimizer update over `grad_accum` micro-batches -> (loss, grad norm, tokens, FLOPs).

    FLOPs are the model's estimate (6N + attention per token, `flops_per_token`) at the
    batch's own length: fine-tuning batches are padded to their longest example.
    """
    step = run.state["step"]
    for fn in hooks.on_step:
        fn(step, run.optimizer)
    apply_lr(run.optimizer, run.schedule(step))
    total, tokens, flops = 0.0, 0, 0.0
    for micro in range(cfg.grad_accum):
        x, y = batches.next_batch()
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        # Only the last micro-batch reduces gradients across ranks; the others accumulate locally.
        with run.par.no_sync(micro == cfg.grad_accum - 1), run.precision.autocast():
            loss = run.model(x, labels=y)  # loss.py: chunked cross-entropy inside the (wrapped) model
            for term in hooks.loss_terms:
                loss = loss + term()
        run.precision.backward(loss / cfg.grad_accum)
        total += float(loss.detach()) / cfg.grad_accum
        tokens += x.numel()
        flops += x.numel() * run.flops_per_token(x.shape[1])
    run.precision.unscale(run.optimizer)  # fp16: clip the true gradients, not the scaled ones
    norm = clip_gradients(run.raw.parameters(), cfg.grad_clip)
    run.precision.step(run.optimizer)
    run.optimizer.zero_grad(set_to_none=True)
    return total, norm, tokens, flops


def _save(run: _Run, run_dir: Path, tokenizer, batches: BatchSource, cfg: TrainConfig, info: DistInfo,
          hooks: Hooks) -> None:
    run.state["data"] = batches.state_dict()
    run.state["grad_scaler"] = run.precision.state_dict()
    model, optimizer_state = run.par.consolidated(), run.par.optimizer_state(run.optimizer)  # FSDP2: every rank
    if info.is_main:
        ckpt.save_checkpoint(run_dir, run.state["step"], model, tokenizer, optimizer_state,
                             run.state, keep=cfg.keep_checkpoints, export=hooks.export, extra=hooks.save_extra)


def _eval_and_log(run: _Run, val, cfg: TrainConfig, info: DistInfo, device, hooks: Hooks) -> dict:
    record = {"step": run.state["step"], "tokens": run.state["tokens"], "flops": run.state.get("flops", 0.0),
              "elapsed_s": round(run.state["elapsed_s"], 2)}
    if val:  # FSDP2: every rank takes part in the forward; they all get the same loss
        loss = evaluate_loss(run.raw, val, device, run.precision.dtype) if info.is_main or run.par.sharded \
            else float("nan")
        record.update(val_loss=loss, val_ppl=math.exp(min(loss, 50.0)))
    if hooks.evaluate is not None and info.is_main:
        record.update(hooks.evaluate(run.raw))
        run.raw.train()
    if info.enabled and not run.par.sharded:  # shards differ by design
        record["replica_divergence"] = replica_divergence(run.raw, info)
    run.metrics.write(record)
    run.state["last_val_loss"] = record.get("val_loss")
    return record


def _improved(metric: str, value: float, best: float | None) -> bool:
    """Losses and perplexities improve downwards, every other score upwards."""
    if best is None:
        return True
    lower = metric.endswith("loss") or metric.endswith("ppl")
    return value < best if lower else value > best


def _track_best(run: _Run, record: dict, cfg: TrainConfig, run_dir: Path, tokenizer,
                hooks: Hooks, info: DistInfo) -> bool:
    """Save RUN/best/ when `best_metric` improves; True when patience has run out."""
    metric = cfg.best_metric
    if metric is None or not (info.is_main or run.par.sharded):  # FSDP2: all ranks gather the best model
        return False
    if metric not in record:
        raise ConfigError(f"config key 'train.best_metric': '{metric}' is not among the evaluation "
                          f"numbers ({', '.join(k for k in record if k != 'step')})")
    best = run.state.get("best") or {}
    if _improved(metric, record[metric], best.get("value")):
        model = run.par.consolidated()
        if info.is_main:
            ckpt.save_best(run_dir, model, tokenizer, hooks.export, hooks.save_extra)
        run.state["best"] = {"metric": metric, "value": record[metric], "step": record["step"], "waited": 0}
        return False
    best["waited"] = best.get("waited", 0) + 1
    return cfg.patience > 0 and best["waited"] >= cfg.patience


def _log_step(run: _Run, loss: float, norm: float, tps: float, bar: tqdm) -> None:
    """One loss record in metrics.jsonl, and the progress bar's numbers."""
    lr = run.optimizer.param_groups[0]["lr"]
    run.metrics.write({"step": run.state["step"], "loss": loss, "lr": lr, "grad_norm": norm,
                       "tokens": run.state["tokens"], "flops": run.state.get("flops", 0.0), "tokens_per_s": tps,
                       "elapsed_s": round(run.state["elapsed_s"], 2)})
    bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{tps:,.0f}")


def _evaluate(run: _Run, val: list, cfg: TrainConfig, run_dir: Path, tokenizer: Any, hooks: Hooks,
              info: DistInfo, device: torch.device, bar: tqdm) -> bool:
    """Evaluate, log, print and track the best model; True when patience has run out."""
    rec = _eval_and_log(run, val, cfg, info, device, hooks)
    if info.is_main:
        shown = "  ".join(f"{k} {v:.4g}" for k, v in rec.items() if k not in ("step", "tokens", "flops", "elapsed_s"))
        bar.write(f"[transfergen] step {run.state['step']}: {shown}", file=sys.stderr)
    return any_rank_true(_track_best(run, rec, cfg, run_dir, tokenizer, hooks, info), info)


def _loop(run: _Run, batches: BatchSource, val: list, cfg: TrainConfig, run_dir: Path, tokenizer: Any,
          hooks: Hooks, info: DistInfo, device: torch.device, bar: tqdm) -> None:
    """Steps until max_steps, the time budget or early stopping; evaluations and checkpoints on the way."""
    if cfg.eval_at_start and run.state["step"] == 0:  # the starting point: transfer's head start
        rec = _eval_and_log(run, val, cfg, info, device, hooks)
        _track_best(run, rec, cfg, run_dir, tokenizer, hooks, info)
    run.model.train()
    start, start_elapsed = time.perf_counter(), run.state["elapsed_s"]
    window_t, window_tokens = time.perf_counter(), 0
    while run.state["step"] < cfg.max_steps:
        loss, norm, tokens, flops = _train_step(run, batches, cfg, hooks, device)
        tokens *= info.world_size
        run.state["step"] += 1
        run.state["tokens"] += tokens
        run.state["flops"] = run.state.get("flops", 0.0) + flops * info.world_size
        run.state["elapsed_s"] = start_elapsed + time.perf_counter() - start
        window_tokens += tokens
        step = run.state["step"]
        if step % cfg.log_every == 0 or step == 1:
            now = time.perf_counter()
            _log_step(run, loss, norm, window_tokens / max(now - window_t, 1e-9), bar)
            window_t, window_tokens = now, 0
        bar.update(1)
        out_of_time = cfg.max_minutes is not None and run.state["elapsed_s"] >= 60 * cfg.max_minutes
        stop = any_rank_true(out_of_time, info)
        if (step % cfg.eval_every == 0 or step == cfg.max_steps or stop) and \
                _evaluate(run, val, cfg, run_dir, tokenizer, hooks, info, device, bar) and not stop:
            stop = True
            _say(info, f"early stop: no better {cfg.best_metric} for {cfg.patience} evaluations")
        if step % cfg.save_every == 0 or step == cfg.max_steps or stop:
            _save(run, run_dir, tokenizer, batches, cfg, info, hooks)
        if stop:
            if out_of_time:
                _say(info, f"time budget of {cfg.max_minutes} min reached at step {step}")
            break


def train(model: torch.nn.Module, tokenizer: Any, batches: BatchSource, val: list, cfg: TrainConfig,
          run_dir: str | Path, *, groups: list[ParamGroup] | None = None, hooks: Hooks | None = None,
          resume: bool = False, info: DistInfo | None = None, device: torch.device | None = None,
          setup_info: dict | None = None) -> dict:
    """Train `model` until `max_steps` (or `max_minutes`); returns the final trainer state.

    Every `eval_every` steps: validation loss/perplexity; every `save_every` steps and at
    the end: an atomic checkpoint. `tokens` counts input tokens over all ranks.
    `setup_info` joins the first metrics record (what the caller set up: task, strategy).
    """
    run_dir, hooks, device = Path(run_dir), hooks or Hooks(), device or torch.device("cpu")
    info = info or DistInfo()
    run = _setup(model, batches, cfg, run_dir, groups, resume, info, device)
    if info.is_main:
        summary = {**log_param_summary(run.raw, run.optimizer), "dtype": run.precision.dtype}
        if run.state["step"] == 0:  # a resume keeps its run's one setup record
            run.metrics.write({**summary, **(setup_info or {})})
        groups = ", ".join(f"{g['name']} lr={g['base_lr']:.2e} ({g['params']:,})" for g in summary["param_groups"])
        _say(info, f"trainable {summary['trainable_params']:,} / frozen {summary['frozen_params']:,} "
                   f"parameters in {run.precision.dtype}; groups: {groups}")
    bar = tqdm(total=cfg.max_steps, initial=run.state["step"], disable=not info.is_main,
               dynamic_ncols=True, file=sys.stderr, desc="train")
    try:
        _loop(run, batches, val, cfg, run_dir, tokenizer, hooks, info, device, bar)
    finally:  # on an error too: the bar ends its line, so the error message gets a line of its own
        bar.close()
        run.metrics.close()
    return dict(run.state)
