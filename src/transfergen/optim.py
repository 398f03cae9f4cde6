"""Optimizer, learning-rate schedules and gradient clipping.

A schedule is a pure function `step -> multiplier`. The loop sets each parameter
group's lr to `group["base_lr"] * multiplier`, so groups with their own base rates
(discriminative fine-tuning, LoRA adapters) keep their ratios at every step.
"""

from __future__ import annotations

import inspect
import math
from typing import Iterable

import torch
from torch import nn

from .config import TrainConfig
from .errors import ConfigError
from .hooks import ParamGroup

SCHEDULES = ("exponential", "cosine", "constant")


def lr_multiplier(step: int, *, schedule: str, warmup_steps: int, max_steps: int,
                  min_lr_ratio: float) -> float:
    """Multiplier on each group's base lr for the update made at 0-based `step`.

    Linear warmup from 1/warmup to 1 over `warmup_steps` updates, then:
    - exponential: decays geometrically from 1 to `min_lr_ratio` at `max_steps`
      (lr * ratio**progress; the seed document's default for both pretraining and transfer);
    - cosine: half a cosine from 1 down to `min_lr_ratio`;
    - constant: stays at 1.
    """
    if schedule not in SCHEDULES:
        raise ConfigError(f"config key 'train.schedule': expected one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    if schedule == "exponential":
        return min_lr_ratio ** progress
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def schedule_for(cfg: TrainConfig):
    """The run's schedule as a one-argument function of the step."""
    def fn(step: int) -> float:
        return lr_multiplier(step, schedule=cfg.schedule, warmup_steps=cfg.warmup_steps,
                             max_steps=cfg.max_steps, min_lr_ratio=cfg.min_lr_ratio)
    fn(0)  # validate the schedule name before any work starts
    return fn


def default_param_groups(model: nn.Module, lr: float, weight_decay: float) -> list[ParamGroup]:
    """Two groups: matrices (decayed) and vectors such as norm gains (not decayed).

    Decaying RMSNorm gains pulls them towards 0 and fights the normalisation,
    so 1-D parameters are exempt (as in GPT-2/nanoGPT practice).
    """
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [ParamGroup(params=decay, weight_decay=weight_decay, base_lr=lr, name="decay"),
              ParamGroup(params=no_decay, weight_decay=0.0, base_lr=lr, name="no_decay")]
    return [g for g in groups if g["params"]]


def build_optimizer(groups: list[ParamGroup], cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over `groups`; each group must carry its own `base_lr`."""
    for g in groups:
        g.setdefault("base_lr", cfg.lr)
        g["lr"] = g["base_lr"]
    kwargs = {"betas": (cfg.beta1, cfg.beta2), "eps": 1e-8}
    # The fused kernel updates all parameters in one pass (fewer memory sweeps than
    # the per-tensor loop); it exists for CPU tensors in recent torch releases.
    if "fused" in inspect.signature(torch.optim.AdamW).parameters:
        try:
            return torch.optim.AdamW(groups, fused=True, **kwargs)
        except (RuntimeError, ValueError):
            pass
    return torch.optim.AdamW(groups, foreach=True, **kwargs)


def apply_lr(optimizer: torch.optim.Optimizer, multiplier: float) -> list[float]:
    """Set every group's lr to base_lr * multiplier; return the lrs set."""
    lrs = []
    for g in optimizer.param_groups:
        g["lr"] = g["base_lr"] * multiplier
        lrs.append(g["lr"])
    return lrs


def clip_gradients(params: Iterable[torch.Tensor], max_norm: float | None) -> float:
    """Clip by global L2 norm; returns the norm before clipping (logged every step)."""
    params = [p for p in params if p.grad is not None]
    if not params:
        return 0.0
    # max_norm None: an infinite bound measures without scaling (the factor is clamped to 1).
    norm = torch.nn.utils.clip_grad_norm_(params, float("inf") if max_norm is None else max_norm, foreach=True)
    full = getattr(norm, "full_tensor", None)  # FSDP2's gradients are shards: the norm over all of them
    return float(full() if full is not None else norm)
