"""The contract between strategies and the training loop: parameter groups and hooks.

A strategy (`strategies/`) builds `ParamGroup`s and fills `Hooks`; the loop (`train.py`)
consumes them without knowing which strategy made them. Neither side imports the other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    from pathlib import Path

    import torch
    import torch.nn as nn


class ParamGroup(TypedDict):
    """One AdamW parameter group, as torch's optimizers take it (a plain dict at run time).

    `base_lr` is the group's own peak rate: the loop sets lr = base_lr x the schedule's
    multiplier, so groups keep their ratios (discriminative rates, LoRA's own rate).
    """

    params: list[nn.Parameter]
    name: str  # a readable label, e.g. "blocks.2-3 x0.64 decay"
    base_lr: float
    weight_decay: float


@dataclass
class Hooks:
    """Extension points for strategies; the loop calls them without knowing who made them.

    on_step(step, optimizer): before each update (gradual unfreezing flips requires_grad).
    loss_terms(): extra scalar losses added to the task loss (e.g. an L2-SP penalty).
    export(model) -> model: what a checkpoint saves as the HF model (e.g. LoRA merged
    into plain weights); None saves the training model itself.
    evaluate(model) -> dict: extra numbers for each evaluation record (e.g. generation
    metrics on a fixed validation subset), computed on rank 0.
    save_extra(model, folder): write more files into a checkpoint (or best/) folder beside the
    exported model, e.g. LoRA's adapter/ in PEFT format; RUN/ gets them with the model.
    """

    on_step: list[Callable[[int, torch.optim.Optimizer], None]] = field(default_factory=list)
    loss_terms: list[Callable[[], torch.Tensor]] = field(default_factory=list)
    export: Callable[[nn.Module], nn.Module] | None = None
    evaluate: Callable[[nn.Module], dict] | None = None
    save_extra: Callable[[nn.Module, Path], None] | None = None


def describe_groups(model: nn.Module, groups: Iterable[ParamGroup | dict[str, Any]]) -> dict[str, Any]:
    """Trainable / frozen parameter counts and each group's size and rates: what a strategy did.

    `groups` may be the optimizer's own `param_groups` (dicts with the same keys).
    """
    params = list(model.parameters())  # a tied head is the embedding: counted once
    trainable = sum(p.numel() for p in params if p.requires_grad)
    rows = [{"name": g.get("name", f"group{i}"), "params": sum(p.numel() for p in g["params"]),
             "base_lr": g["base_lr"], "weight_decay": g["weight_decay"]} for i, g in enumerate(groups)]
    return {"trainable_params": trainable, "frozen_params": sum(p.numel() for p in params) - trainable,
            "param_groups": rows}
