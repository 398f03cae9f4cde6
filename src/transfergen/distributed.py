"""Data-parallel plumbing: the same command runs alone or under `torchrun`.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; without them we are one process and
every helper here degrades to a no-op, so the training loop has no DDP branches
beyond wrapping the model.

Every collective runs on the rank's device (`DistInfo.device`, or the model's own): NCCL
has no CPU tensors, so a flag or checksum reduced on the CPU would stop a GPU run at step 1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from .errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    # Where this rank's collectives run: its GPU under NCCL, else the CPU (gloo, MPS ranks too).
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when launched by torchrun (gloo on CPU, nccl on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    comm = device if device.type == "cuda" else torch.device("cpu")
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")), comm)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return info


DEVICES = ("auto", "cpu", "cuda", "mps")  # and cuda:N


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str, local_rank: int = 0, key: str = "train.device") -> torch.device:
    """A device name (`auto` | cpu | cuda | cuda:N | mps) -> this rank's device; ConfigError naming
    `key` for a device unknown here or absent from this machine (checked before any work, so
    `cuda` on a CPU box fails at once). `auto` takes CUDA, then MPS, then the CPU."""
    kind, _, index = name.partition(":")
    if kind not in DEVICES or (index and (kind != "cuda" or not index.isdigit())):
        raise ConfigError(f"config key '{key}': unknown device '{name}' (expected auto, cpu, cuda, cuda:N or mps)")
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu"
    if kind == "cpu":
        return torch.device("cpu")
    if kind == "mps":
        if not _mps_available():
            raise ConfigError(f"config key '{key}': 'mps' asks for Apple's GPU, which this machine does not "
                              "have (use cpu or auto)")
        return torch.device("mps")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    n = int(index) if index else local_rank
    if n >= count:
        raise ConfigError(f"config key '{key}': '{name}' asks for CUDA device {n}, but this machine "
                          f"has {count} (use cpu or auto)")
    return torch.device("cuda", n)


def pick_device(name: str, info_local_rank: int = 0) -> torch.device:
    """`auto` takes this rank's GPU when there is one, else the CPU; makes it current."""
    device = resolve_device(name, info_local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def barrier(info: DistInfo) -> None:
    """Wait for every rank (rank 0 prepares tokenizer and cache, the others wait)."""
    if info.enabled:
        # NCCL guesses the GPU from the rank unless told; a wrong guess hangs or warns.
        if info.device.type == "cuda":
            dist.barrier(device_ids=[info.device.index or 0])
        else:
            dist.barrier()


def any_rank_true(flag: bool, info: DistInfo) -> bool:
    """True on every rank when any rank says so (e.g. rank 0's time budget ran out)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def replica_divergence(model: torch.nn.Module, info: DistInfo) -> float:
    """Max over ranks of |param checksum - rank 0's|: 0.0 when replicas are identical.

    DDP keeps replicas equal by averaging gradients; a non-zero value means a bug
    (a rank skipped a step, saw different data shapes, or ran a different optimizer).
    The checksums go to the collectives' device (a no-op for a model on its rank's GPU).
    """
    if not info.enabled:
        return 0.0
    with torch.no_grad():
        # Two checksums (sum and sum of squares) in float64 catch any single change.
        flat = torch.cat([p.detach().double().flatten() for p in model.parameters()])
        local = torch.stack([flat.sum(), (flat * flat).sum()]).to(info.device)  # (2,) where collectives run
    ref = local.clone()
    dist.broadcast(ref, src=0)
    diff = (local - ref).abs().max()
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return float(diff)


def shutdown(info: DistInfo) -> None:
    """Leave the process group cleanly so torchrun sees a normal exit."""
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
