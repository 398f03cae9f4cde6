"""`lora`: low-rank adapters (Hu et al., 2021) via PEFT; the pretrained weights stay frozen.

Training runs on the PEFT-injected model; `plan.export` merges the adapters into plain
weights (on a copy), so the saved folder is an ordinary model that loads without PEFT.
Every checkpoint also holds `adapter/` (adapter_config.json + adapter_model.safetensors,
PEFT's format), so `PeftModel.from_pretrained(base, RUN/adapter)` rebuilds the merged model
from the base folder: written only when that holds (nothing but the adapters trains, no
weight was re-initialised, the run starts from a model folder with its own vocabulary).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..config import StrategyConfig
from ..errors import ConfigError
from ..model import HFCausalLM
from .base import Plan, register

ADAPTER_DIR = "adapter"


def _is_adaptable(module: nn.Module) -> bool:
    # transformers' GPT-2 uses its own Conv1D (a transposed linear), which PEFT supports.
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def lora_targets(model: nn.Module, targets: list[str]) -> list[str]:
    """Names of linear modules ending with any of `targets`; ConfigError when none match."""
    counts: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        counts[id(p)] = counts.get(id(p), 0) + 1
    linears = [n for n, m in model.named_modules() if _is_adaptable(m)]
    found = [n for n in linears if any(n == t or n.endswith("." + t) for t in targets)]
    if not found:
        raise ConfigError(f"strategy.lora_targets: no linear module name ends with any of {targets} "
                          f"(e.g. {', '.join(linears[:6])})")
    # Merging into a tied weight would silently change the embedding too.
    tied = [n for n in found if counts[id(model.get_submodule(n).weight)] > 1]
    if tied:
        raise ConfigError(f"strategy.lora_targets: '{tied[0]}' shares its weight with another module "
                          f"(tied embedding); LoRA cannot adapt it")
    return found


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """A deep copy of `model` with adapters merged and PEFT layers swapped for their base layers."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    out = copy.deepcopy(model)  # deepcopy keeps tied parameters tied
    names = [n for n, m in out.named_modules() if isinstance(m, BaseTunerLayer)]
    for name in names:
        layer = out.get_submodule(name)
        layer.merge()
        parent, _, child = name.rpartition(".")
        setattr(out.get_submodule(parent) if parent else out, child, layer.get_base_layer())
    return out


@register("lora")
def lora(model: nn.Module, opts: StrategyConfig, plan: Plan) -> None:
    """Inject LoRA adapters into the `lora_targets` linears; only the adapters train."""
    from peft import LoraConfig, inject_adapter_in_model

    if any(n != "full" for n in plan.applied):
        raise ConfigError("strategy.name: 'lora' must come first (it renames the weights it wraps), "
                          "e.g. 'lora+l2sp'")
    if opts.lora_rank < 1:
        raise ConfigError(f"strategy.lora_rank: must be at least 1, got {opts.lora_rank}")
    found = lora_targets(model, opts.lora_targets)
    conv1d = any(type(model.get_submodule(n)).__name__ == "Conv1D" for n in found)
    cfg = LoraConfig(r=opts.lora_rank, lora_alpha=opts.lora_alpha, lora_dropout=opts.lora_dropout,
                     target_modules=found, fan_in_fan_out=conv1d, bias="none")
    inject_adapter_in_model(cfg, model)  # in place; freezes everything but the adapters
    adapters = [n for n, p in model.named_parameters() if p.requires_grad]
    plan.new_params.update(adapters)
    if opts.lora_lr is not None:
        plan.lr_abs.update({n: opts.lora_lr for n in adapters})
    plan.export = _chain(plan.export, merge_lora)
    plan.finalizers.append(lambda: _plan_adapter(model, plan, cfg, set(adapters)))
    count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lr = f"lr {opts.lora_lr}" if opts.lora_lr is not None else "lr = train.lr"
    plan.log.append(f"lora: rank {opts.lora_rank}, alpha {opts.lora_alpha} on {len(found)} modules "
                    f"({', '.join(sorted(set(opts.lora_targets)))}); {count:,} adapter parameters, {lr}; "
                    f"base weights frozen; export merges the adapters")


def _plan_adapter(model: nn.Module, plan: Plan, cfg: Any, adapters: set[str]) -> None:
    """After all entries: save adapter/ with each checkpoint if the adapters alone, on the base
    folder's weights, give the trained model; otherwise say in the log why there is none."""
    params = dict(model.named_parameters())
    trains = [n for n, p in params.items() if (p.requires_grad or n in plan.pending) and n not in adapters]
    changed = sorted(plan.new_params - adapters)
    reason = ("the initial weights are no model folder's (scratch, or a grown vocabulary)" if plan.base is None
              else f"'{trains[0]}' trains too" if trains else f"'{changed[0]}' was re-initialised" if changed
              else None)
    if reason:
        plan.log.append(f"lora: no adapter/ ({reason}): PeftModel could not rebuild the model from a base")
        return
    # Our names are the HF model's; HFCausalLM wraps it as `hf`.
    prefix = "hf." if isinstance(model, HFCausalLM) else ""
    peft_cfg = copy.deepcopy(cfg)
    peft_cfg.target_modules = sorted(n.removeprefix(prefix) for n in cfg.target_modules)
    peft_cfg.base_model_name_or_path = str(Path(plan.base).resolve())
    peft_cfg.task_type = "CAUSAL_LM"
    plan.save_extra = lambda m, folder: write_adapter(m, folder / ADAPTER_DIR, peft_cfg, prefix)
    plan.log.append(f"lora: {ADAPTER_DIR}/ holds the adapters in PEFT format (base: {plan.base})")


@torch.no_grad()
def write_adapter(model: nn.Module, folder: Path, peft_cfg: Any, prefix: str = "") -> None:
    """`model`'s adapters as PeftModel.save_pretrained writes them: adapter_config.json and
    adapter_model.safetensors, tensors named base_model.model.<module path in the HF model>."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    state = get_peft_model_state_dict(model)  # adapter name dropped, as PEFT saves
    tensors = {"base_model.model." + k.removeprefix(prefix): v.detach().cpu().contiguous() for k, v in state.items()}
    folder.mkdir(parents=True, exist_ok=True)
    peft_cfg.save_pretrained(str(folder))
    save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})


def _chain(first, second):
    if first is None:
        return second
    return lambda m: second(first(m))
