"""`reinit`: re-initialise the top blocks, transferring only the bottom of the network.

The top of a pretrained LM is the most specific to its pretraining objective; starting
those blocks afresh often helps when the target task differs (Zhang et al., 2021).
"""

from __future__ import annotations

import types

import torch
import torch.nn as nn

from ..config import StrategyConfig
from ..errors import ConfigError, UserError
from ..model import HFCausalLM, TransferGenLM
from .base import Plan, model_layout, register


@torch.no_grad()
def init_block(model: nn.Module, block: nn.Module) -> None:
    """Initialise `block` (a block of `model`) exactly as the model initialises its own."""
    if isinstance(model, TransferGenLM):
        # Reuse the model's own init (std, 1/sqrt(2*n_layer) residual scaling, norms = 1)
        # on just this block's parameters, so the two can never drift apart.
        proxy = types.SimpleNamespace(shape=model.shape, named_parameters=block.named_parameters)
        TransferGenLM.reset_parameters(proxy)
        return
    hf = model.hf if isinstance(model, HFCausalLM) else model
    if not hasattr(hf, "_init_weights"):
        raise UserError(f"strategy 'reinit': cannot initialise blocks of {type(hf).__name__}")
    block.apply(hf._init_weights)  # transformers' per-module init, as at model creation


@register("reinit")
def reinit(model: nn.Module, opts: StrategyConfig, plan: Plan) -> None:
    """Re-initialise the top `reinit_top` blocks; they are new, not pretrained, parameters."""
    if "lora" in plan.applied:
        raise ConfigError("strategy.name: 'reinit' cannot follow 'lora' "
                          "(the adapters would be re-initialised)")
    layout = model_layout(model)
    n, k = len(layout.blocks), opts.reinit_top
    if not 1 <= k <= n:
        raise ConfigError(f"strategy.reinit_top: must be between 1 and the model's {n} blocks, got {k}")
    for prefix, names in zip(layout.blocks[n - k:], layout.block_params[n - k:], strict=True):
        init_block(model, model.get_submodule(prefix))
        plan.new_params.update(names)
    count = sum(p.numel() for prefix in layout.blocks[n - k:]
                for p in model.get_submodule(prefix).parameters())
    plan.log.append(f"reinit: re-initialised blocks {n - k}-{n - 1} ({count:,} parameters)")
