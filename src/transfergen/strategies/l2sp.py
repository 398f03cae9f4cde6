"""`l2sp`: pull fine-tuned weights towards their pretrained values (Li et al., 2018).

Penalty alpha/2 * sum ||w - w0||^2 over the pretrained parameters that train. Those
parameters leave plain weight decay (which would pull them towards 0 instead); new
parameters (LoRA adapters, re-initialised blocks) keep plain weight decay.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..config import StrategyConfig
from ..errors import ConfigError
from .base import Plan, register

Anchor = list[tuple[nn.Parameter, torch.Tensor]]  # (parameter, its pretrained value)


def l2sp_penalty(anchors: Anchor, alpha: float) -> torch.Tensor:
    """alpha/2 * sum ||w - w0||^2 over the anchors that currently train."""
    total = None
    for i, (p, w0) in enumerate(anchors):
        if not p.requires_grad:  # frozen (e.g. still pending): unchanged, contributes 0
            continue
        if w0.device != p.device:  # the loop moves the model after the strategy is applied
            w0 = w0.to(p.device)
            anchors[i] = (p, w0)
        term = (p - w0).pow(2).sum()
        total = term if total is None else total + term
    if total is None:
        return torch.zeros(())
    return 0.5 * alpha * total


@register("l2sp")
def l2sp(model: nn.Module, opts: StrategyConfig, plan: Plan) -> None:
    """Add the L2-SP loss term; its anchors are taken once every entry has run."""
    alpha = opts.l2sp_alpha
    if alpha < 0:
        raise ConfigError(f"strategy.l2sp_alpha: must be >= 0, got {alpha}")

    def anchor() -> None:
        # Deferred so that `l2sp+reinit` still sees which blocks were re-initialised.
        params = dict(model.named_parameters())
        names = [n for n, p in params.items()
                 if (p.requires_grad or n in plan.pending) and n not in plan.new_params]
        if not names:
            raise ConfigError(f"strategy 'l2sp': no pretrained parameter trains in "
                              f"'{'+'.join(plan.applied)}'")
        anchors: Anchor = [(params[n], params[n].detach().clone()) for n in names]
        plan.no_decay.update(names)
        plan.hooks.loss_terms.append(lambda: l2sp_penalty(anchors, alpha))
        count = sum(params[n].numel() for n in names)
        plan.log.append(f"l2sp: alpha {alpha} over {count:,} pretrained parameters "
                        f"(no plain weight decay on them)")

    plan.finalizers.append(anchor)
