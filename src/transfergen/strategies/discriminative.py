"""Discriminative fine-tuning (ULMFiT): lower layers, more general, move more slowly."""

from __future__ import annotations

import torch.nn as nn

from ..config import StrategyConfig
from ..errors import ConfigError
from .base import Plan, model_layout, register


def layer_factors(n_blocks: int, decay: float) -> list[float]:
    """lr multiplier of each block, bottom to top: decay**(distance from the top block)."""
    return [decay ** (n_blocks - 1 - i) for i in range(n_blocks)]


@register("discriminative")
def discriminative(model: nn.Module, opts: StrategyConfig, plan: Plan) -> None:
    """Top block, final norm and head x1; block d below the top x lr_decay**d; embeddings lowest."""
    decay = opts.lr_decay
    if not 0.0 < decay <= 1.0:
        raise ConfigError(f"strategy.lr_decay: must be in (0, 1], got {decay}")
    layout = model_layout(model)
    n = len(layout.blocks)
    for names, factor in zip(layout.block_params, layer_factors(n, decay), strict=True):
        plan.scale(names, factor)
    # The embedding sits below block 0, one more step down the ladder.
    plan.scale(layout.embed, decay ** n)
    note = (f"; the output head is tied to the embedding and shares its x{decay ** n:.3g}"
            if layout.tied else "")
    plan.log.append(f"discriminative: block i lr x{decay}**({n - 1}-i) (bottom x{decay ** (n - 1):.3g}), "
                    f"embeddings x{decay ** n:.3g}, final norm/head x1{note}")
