"""Which parameters train: `full`, `freeze` (fixed) and `gradual` (ULMFiT unfreezing)."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..config import StrategyConfig
from ..errors import ConfigError
from .base import Layout, Plan, model_layout, register


def _count(model: nn.Module, names: list[str]) -> int:
    params = dict(model.named_parameters())
    return sum(params[n].numel() for n in names)


def _set_trainable(model: nn.Module, names: list[str], flag: bool, plan: Plan) -> None:
    params = dict(model.named_parameters())
    for n in names:
        params[n].requires_grad_(flag)
        if not flag:  # frozen for good: an earlier gradual hook must not bring it back
            plan.pending.discard(n)


def _tied_note(layout: Layout) -> str:
    return " (the output head is tied to the embedding and goes with it)" if layout.tied else ""


@register("full")
def full(model: nn.Module, opts: StrategyConfig, plan: Plan) -> None:
    """Every parameter trains: plain fine-tuning (or a scratch baseline)."""
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    plan.log.append(f"full: {n:,} parameters train")


def _check_k(key: str, k: int, n_blocks: int) -> None:
    if not 0 <= k <= n_blocks:
        raise ConfigError(f"strategy.{key}: must be between 0 and the model's {n_blocks} blocks, got {k}")


@register("freeze")
def freeze(model: nn.Module, opts: StrategyConfig, plan: Plan) -> None:
    """Freeze the embedding, the bottom `freeze_bottom` blocks, or all but the top `train_top`."""
    layout = model_layout(model)
    n = len(layout.blocks)
    _check_k("freeze_bottom", opts.freeze_bottom, n)
    bottom = opts.freeze_bottom
    if opts.train_top is not None:
        _check_k("train_top", opts.train_top, n)
        bottom = max(bottom, n - opts.train_top)
    names = [p for blk in layout.block_params[:bottom] for p in blk]
    what = [f"blocks 0-{bottom - 1}"] if bottom else []
    if opts.freeze_embeddings or opts.train_top is not None:
        names += layout.embed
        what.append("embeddings" + _tied_note(layout))
    if not names:
        raise ConfigError("strategy 'freeze' froze nothing: set strategy.freeze_bottom, "
                          "strategy.train_top or strategy.freeze_embeddings")
    _set_trainable(model, names, False, plan)
    plan.log.append(f"freeze: froze {', '.join(what)}: {_count(model, names):,} parameters")


def _stages(layout: Layout) -> list[list[str]]:
    """Parameter names in unfreezing order: top block + head, next blocks down, embeddings."""
    blocks = layout.block_params[::-1]
    return [blocks[0] + layout.head, *blocks[1:], layout.embed]


@register("gradual")
def gradual(model: nn.Module, opts: StrategyConfig, plan: Plan) -> None:
    """ULMFiT gradual unfreezing, driven by an on_step hook that flips requires_grad.

    Everything it will unfreeze is `pending`, so it is in the optimizer from step 0;
    AdamW skips parameters without gradients, so they stay put until unfrozen.
    """
    every = opts.unfreeze_every
    if every < 1:
        raise ConfigError(f"strategy.unfreeze_every: must be at least 1, got {every}")
    layout = model_layout(model)
    params = dict(model.named_parameters())
    # Only what trains now is managed: an earlier `freeze` keeps its parameters frozen.
    stages = [[n for n in s if params[n].requires_grad] for s in _stages(layout)]
    for names in stages[1:]:
        _set_trainable(model, names, False, plan)
        plan.pending.update(names)
    plan.hooks.on_step.append(_unfreeze_hook(params, stages, every, plan))
    n = len(layout.blocks)
    plan.log.append(f"gradual: top block + head train at step 0, one more block every {every} steps, "
                    f"embeddings at step {n * every}{_tied_note(layout)}; "
                    f"{sum(_count(model, s) for s in stages[1:]):,} parameters pending")


def _unfreeze_hook(params: dict[str, nn.Parameter], stages: list[list[str]], every: int, plan: Plan):
    done = {"stage": 0}

    def on_step(step: int, optimizer: torch.optim.Optimizer) -> None:
        # A function of the step alone, so a resumed run unfreezes what it had at once.
        stage = min(step // every, len(stages) - 1)
        for s in range(done["stage"] + 1, stage + 1):
            for n in stages[s]:
                if n in plan.pending:  # a later entry may have frozen it for good
                    params[n].requires_grad_(True)
        done["stage"] = max(done["stage"], stage)

    return on_step
