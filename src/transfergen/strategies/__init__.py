"""Transfer strategies: which pretrained knowledge a fine-tuning run keeps, and how.

`apply_strategy(model, cfg.strategy, cfg.train)` runs the entries named in
`strategy.name` (joined by '+', e.g. `reinit+discriminative`) and returns the
optimizer groups, the loop hooks (`hooks.export`: training model -> model to save)
and a summary to log. Entries live in one small module each and register
themselves with `@register("name")`.
"""

from __future__ import annotations

from .base import (STRATEGIES, Layout, Plan, StrategyResult, apply_strategy, build_param_groups,
                   model_layout, register, strategy_entries)
from . import selection, discriminative, reinit, lora, l2sp  # noqa: F401  (registers entries)
from .l2sp import l2sp_penalty
from .lora import merge_lora

__all__ = ["STRATEGIES", "Layout", "Plan", "StrategyResult", "apply_strategy", "build_param_groups",
           "l2sp_penalty", "merge_lora", "model_layout", "register", "strategy_entries"]
