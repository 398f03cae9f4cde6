"""How the loop spreads a model over ranks, and trades compute for activation memory.

    train.parallel=ddp   every rank holds the whole model; DDP averages the gradients
    train.parallel=fsdp  PyTorch's FSDP2 (`fully_shard`): each block, then the rest, is
                         sharded over the ranks, so parameters, gradients and AdamW moments
                         take 1/world of the memory each; a block is gathered for its
                         forward and backward only
    train.activation_checkpointing   each block keeps only its input and recomputes the
                         rest in the backward pass (about 1/3 more compute)

Sharding replaces the model's parameters with new (DTensor) ones under the same names, so
the optimizer is built after `shard`, from groups remapped by name (`wrap`). Checkpoints
stay HF model folders: `consolidated` gathers the full weights on rank 0 into a plain copy
of the model (built on the meta device, so no second copy lives anywhere else), and the
optimizer state is saved consolidated, keyed by parameter name.
"""

from __future__ import annotations

import contextlib
import copy
import functools
from typing import Any

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.checkpoint import checkpoint

from .distributed import DistInfo
from .hooks import ParamGroup
from .model import block_list

PARALLEL = ("ddp", "fsdp")


def checkpoint_blocks(model: nn.Module) -> int:
    """Recompute each transformer block in the backward pass instead of keeping its activations.

    The block's `forward` is wrapped in place (non-reentrant `torch.utils.checkpoint`), so
    parameter names, state dicts and saved folders are unchanged; works for our model and
    any HF model `block_list` finds. Returns the number of blocks wrapped."""
    blocks = model.get_submodule(block_list(model))
    for block in blocks:
        if not getattr(block, "_tg_checkpointed", False):
            block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False)
            block._tg_checkpointed = True
    return len(blocks)


def is_sharded(model: nn.Module) -> bool:
    """True for a model `shard` has wrapped (its parameters are DTensor shards)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def shard(model: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """FSDP2 over this run's ranks: one unit per block (gathered only while it computes), one
    for the rest (embeddings, final norm, head: a tied head stays tied). In place; each block
    moves to `device` as it is sharded, so the whole model never has to fit there."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (info.world_size,))
    for block in model.get_submodule(block_list(model)):
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def _skeleton(model: nn.Module) -> nn.Module:
    """A copy of `model` whose parameters live on the meta device (no memory), ties kept;
    buffers (RoPE tables: derived, not saved) are real copies."""
    memo: dict[int, Any] = {}
    for p in model.parameters():  # deduplicated: a tied weight maps to one meta parameter
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    return copy.deepcopy(model, memo)


def _aliases(model: nn.Module) -> list[tuple[str, str]]:
    """(name, the first name of the same parameter) for every tied parameter's second name."""
    first: dict[int, str] = {}
    out = []
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first:
            out.append((name, first[id(p)]))
        else:
            first[id(p)] = name
    return out


class Parallel:
    """A model as this run trains it: alone, DDP replicas or FSDP2 shards.

    `model` is what the loop calls; `raw` the module whose parameters the optimizer holds
    (the model itself under FSDP2, which wraps in place)."""

    def __init__(self, model: nn.Module, mode: str, info: DistInfo, device: torch.device,
                 activation_checkpointing: bool = False):
        if activation_checkpointing:
            checkpoint_blocks(model)
        self.info, self.raw = info, model
        self.sharded = info.enabled and mode == "fsdp"
        if self.sharded:
            self.skeleton, self.aliases = _skeleton(model), _aliases(model)
            self.model = shard(model, info, device)
        else:
            model.to(device)
            cuda = [device.index or 0] if device.type == "cuda" else None
            self.model = DDP(model, device_ids=cuda) if info.enabled else model

    def remap(self, groups: list[ParamGroup], names: dict[int, str]) -> list[ParamGroup]:
        """The groups over this model's parameters: `names` maps id(old parameter) -> name."""
        params = dict(self.raw.named_parameters())
        return [{**g, "params": [params[names[id(p)]] for p in g["params"]]} for g in groups]

    def no_sync(self, sync: bool) -> contextlib.AbstractContextManager:
        """Inside: backward accumulates locally (sync=False), or reduces across ranks (sync=True)."""
        if isinstance(self.model, DDP) and not sync:
            return self.model.no_sync()
        if self.sharded:
            self.model.set_requires_gradient_sync(sync)
        return contextlib.nullcontext()

    def consolidated(self) -> nn.Module | None:
        """The trained model as one plain module on rank 0 (CPU under FSDP2), None elsewhere.
        Under FSDP2 every rank must call it: the weights are gathered from all of them."""
        if not self.sharded:
            return self.raw if self.info.is_main else None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(self.raw, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not self.info.is_main:
            return None
        plain = copy.deepcopy(self.skeleton)
        plain.load_state_dict(full, assign=True)  # the gathered tensors become the parameters
        for name, target in self.aliases:  # assign gave each name its own tensor: tie them again
            owner, _, attr = name.rpartition(".")
            setattr(plain.get_submodule(owner) if owner else plain, attr, plain.get_parameter(target))
        return plain

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict:
        """What a checkpoint keeps of the optimizer (FSDP2: consolidated, keyed by name; every rank calls)."""
        if not self.sharded:
            return optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(self.raw, optimizer,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, state: dict) -> None:
        """The counterpart of `optimizer_state` (FSDP2: each rank takes its shard of the full state)."""
        if not self.sharded:
            optimizer.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(self.raw, optimizer, state, options=StateDictOptions(full_state_dict=True))
