"""The strategy machinery: the Plan entries fill in, model layouts, parameter groups.

A strategy name such as `reinit+discriminative` runs registered entries in order over
one `Plan`. Entries set `requires_grad` on the model directly and record everything
else (learning-rate multipliers, parameters a hook will unfreeze later, hooks, how to
export the trained model) in the Plan; `build_param_groups` then turns model + Plan
into AdamW parameter groups, which keep their lr ratios under the loop's schedule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch.nn as nn

from ..config import StrategyConfig, TrainConfig
from ..errors import ConfigError
from ..hooks import Hooks, ParamGroup
from ..model import block_list

Entry = Callable[[nn.Module, StrategyConfig, "Plan"], None]
STRATEGIES: dict[str, Entry] = {}


def register(name: str) -> Callable[[Entry], Entry]:
    """Decorator adding an entry `fn(model, opts, plan)` to STRATEGIES under `name`."""
    def deco(fn: Entry) -> Entry:
        if name in STRATEGIES:
            raise ValueError(f"strategy '{name}' registered twice")
        STRATEGIES[name] = fn
        return fn
    return deco


@dataclass
class Plan:
    """What the entries decided beyond requires_grad; keys are parameter names."""

    lr_scale: dict[str, float] = field(default_factory=dict)  # x train.lr (or x lr_abs); absent = 1
    lr_abs: dict[str, float] = field(default_factory=dict)  # absolute base lr (e.g. LoRA adapters)
    pending: set[str] = field(default_factory=set)  # frozen now, unfrozen later by a hook
    hooks: Hooks = field(default_factory=Hooks)
    export: Callable[[nn.Module], nn.Module] | None = None  # training model -> model to save
    log: list[str] = field(default_factory=list)
    new_params: set[str] = field(default_factory=set)  # not pretrained (adapters, re-initialised)
    no_decay: set[str] = field(default_factory=set)  # exempt from plain weight decay (L2-SP's)
    applied: list[str] = field(default_factory=list)  # entries run so far, in order
    finalizers: list[Callable[[], None]] = field(default_factory=list)  # run after all entries
    save_extra: Callable[[nn.Module, Path], None] | None = None  # more files per checkpoint (adapter/)
    base: str | None = None  # the model folder the initial weights came from (None: scratch, grown vocab)

    def scale(self, names: list[str], factor: float) -> None:
        """Multiply the lr of `names` by `factor`, so entries compose."""
        for n in names:
            self.lr_scale[n] = self.lr_scale.get(n, 1.0) * factor


@dataclass
class Layout:
    """Parameter names by region: embeddings, blocks (bottom to top), and the rest on top."""

    embed: list[str]  # input (and position) embeddings
    blocks: list[str]  # block module prefixes, bottom to top
    block_params: list[list[str]]  # parameter names of each block
    head: list[str]  # final norm, untied head, anything else outside the blocks
    tied: bool  # the output head *is* an input embedding parameter

    def region(self, name: str) -> str:
        """'embed', 'blocks.i' or 'head': a readable label for group names."""
        if name in self.embed:
            return "embed"
        for i, prefix in enumerate(self.blocks):
            if name.startswith(prefix + "."):
                return f"blocks.{i}"
        return "head"


def model_layout(model: nn.Module) -> Layout:
    """The Layout of TransferGenLM, HFCausalLM or a Llama/GPT-2/GPT-NeoX-like HF model."""
    stack = block_list(model)
    blocks = [f"{stack}.{i}" for i in range(len(model.get_submodule(stack)))]
    embed_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    embed, head = [], []
    block_params: list[list[str]] = [[] for _ in blocks]
    for name, p in model.named_parameters():  # deduplicated: a tied head shows as the embedding
        inside = [i for i, b in enumerate(blocks) if name.startswith(b + ".")]
        if inside:
            block_params[inside[0]].append(name)
        else:
            (embed if id(p) in embed_ids else head).append(name)
    # Tied: some embedding parameter is also reachable under a second name (the head).
    counts: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        counts[id(p)] = counts.get(id(p), 0) + 1
    tied = any(counts[i] > 1 for i in embed_ids if i in counts)
    return Layout(embed, blocks, block_params, head, tied)


def _span(labels: list[str]) -> str:
    """Compress region labels: ['blocks.0', 'blocks.1', 'blocks.2'] -> 'blocks.0-2'."""
    out: list[str] = []
    run: list[int] = []
    for label in [*labels, "end"]:
        if label.startswith("blocks."):
            i = int(label.split(".")[1])
            if run and i == run[-1] + 1:
                run.append(i)
                continue
        if run:
            out.append(f"blocks.{run[0]}" + (f"-{run[-1]}" if len(run) > 1 else ""))
            run = []
        if label.startswith("blocks."):
            run = [int(label.split(".")[1])]
        elif label != "end":
            out.append(label)
    return "+".join(out)


def build_param_groups(model: nn.Module, plan: Plan, lr: float, weight_decay: float) -> list[ParamGroup]:
    """AdamW groups keyed by (base lr, decayed?) over every trainable or pending parameter.

    base lr = plan.lr_abs.get(name, lr) * plan.lr_scale.get(name, 1). Matrices decay,
    vectors (norm gains, biases) and plan.no_decay do not (see optim.default_param_groups).
    """
    params = dict(model.named_parameters())  # a tied parameter appears once
    stale = (set(plan.lr_scale) | set(plan.lr_abs) | plan.pending) - params.keys()
    if stale:  # an entry recorded a name that no longer exists: a composition bug, not a no-op
        raise ConfigError(f"strategy.name: plan refers to unknown parameter '{sorted(stale)[0]}'")
    layout = model_layout(model)
    groups: dict[tuple[float, bool], dict[str, Any]] = {}
    for name, p in params.items():
        if not (p.requires_grad or name in plan.pending):
            continue
        base_lr = plan.lr_abs.get(name, lr) * plan.lr_scale.get(name, 1.0)
        decay = p.dim() >= 2 and name not in plan.no_decay
        g = groups.setdefault((base_lr, decay), {"params": [], "base_lr": base_lr,
                                                 "weight_decay": weight_decay if decay else 0.0,
                                                 "regions": []})
        g["params"].append(p)
        if (r := layout.region(name)) not in g["regions"]:
            g["regions"].append(r)
    out = []
    for (base_lr, decay), g in groups.items():
        label = "all" if len(g["regions"]) == len(layout.blocks) + 2 else _span(g["regions"])
        name = f"{label} x{base_lr / lr:.2f} {'decay' if decay else 'no_decay'}"
        out.append(ParamGroup(params=g["params"], name=name, base_lr=base_lr, weight_decay=g["weight_decay"]))
    return out


@dataclass
class StrategyResult:
    """What the caller hands to `train`: the groups, and the hooks (whose `export` says what
    a checkpoint saves); `summary` is what the strategy did beyond them (for the log)."""

    groups: list[ParamGroup]
    hooks: Hooks
    summary: dict[str, Any]


def _summary(model: nn.Module, plan: Plan) -> dict[str, Any]:
    """The entries run, the parameters a hook unfreezes later, and each entry's log line.

    Trainable and frozen counts are the loop's (`hooks.describe_groups`), not repeated here.
    """
    params = dict(model.named_parameters())
    pending = sum(params[n].numel() for n in plan.pending if not params[n].requires_grad)
    return {"strategy": "+".join(plan.applied), "pending_params": pending, "log": list(plan.log)}


def strategy_entries(name: str) -> list[str]:
    """The registered entries `name` joins with '+', in order; ConfigError for an unknown or
    repeated one (called before any work, and again when the strategy is applied)."""
    names = [n.strip() for n in name.split("+")]
    for n in names:
        if n not in STRATEGIES:
            raise ConfigError(f"strategy.name: unknown strategy '{n}' in '{name}' "
                              f"(known: {', '.join(sorted(STRATEGIES))}; combine with '+')")
    if len(set(names)) != len(names):
        raise ConfigError(f"strategy.name: '{name}' repeats an entry")
    return names


def apply_strategy(model: nn.Module, scfg: StrategyConfig, tcfg: TrainConfig,
                   base: str | None = None) -> StrategyResult:
    """Run the entries of `scfg.name` in order on `model` (in place) and build its groups.

    `base`: the model folder whose weights `model` holds (None for scratch weights or a grown
    vocabulary); LoRA names it in its adapter's config."""
    plan = Plan(base=base)
    for name in strategy_entries(scfg.name):
        STRATEGIES[name](model, scfg, plan)
        plan.applied.append(name)
    for fn in plan.finalizers:  # entries that need the final picture (l2sp's anchors)
        fn()
    groups = build_param_groups(model, plan, tcfg.lr, tcfg.weight_decay)
    if not groups:
        raise ConfigError(f"strategy.name: '{scfg.name}' leaves no parameter to train")
    plan.hooks.export = plan.export  # checkpoints save the exported (e.g. LoRA-merged) model
    plan.hooks.save_extra = plan.save_extra
    return StrategyResult(groups, plan.hooks, _summary(model, plan))
