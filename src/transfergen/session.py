"""What every training command does around the loop: device, ranks, threads, run folder.

Pretraining and fine-tuning share this so that both refuse to overwrite a finished
run, record their resolved config, and behave identically under torchrun.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import latest_checkpoint
from .config import RunConfig, save_yaml
from .distributed import DistInfo, barrier, init_distributed, pick_device, shutdown
from .errors import UserError
from .precision import emulated_warning, resolve_dtype


@dataclass
class Session:
    cfg: RunConfig
    info: DistInfo
    device: torch.device
    run_dir: Path

    @property
    def last_checkpoint(self) -> Path | None:
        """The checkpoint to resume from (None for a fresh run)."""
        return latest_checkpoint(self.run_dir) if self.cfg.resume else None


def check_run_dir(cfg: RunConfig) -> Path:
    """Refuse to overwrite a run that already has checkpoints unless resuming."""
    run_dir = Path(cfg.out)
    last = latest_checkpoint(run_dir)
    if last is not None and not cfg.resume:
        raise UserError(f"already holds a run (last checkpoint {last.name}); pass --resume to continue "
                        "it or choose another --out", path=str(run_dir))
    if cfg.resume and last is None:
        raise UserError("--resume given but the run has no checkpoint to resume from", path=str(run_dir))
    return run_dir


def _set_threads(cfg: RunConfig, info: DistInfo, device: torch.device) -> None:
    threads = cfg.train.threads
    if threads is None and info.enabled and device.type == "cpu":
        # Each rank gets its share of the cores; oversubscription makes gloo crawl.
        threads = max(1, (os.cpu_count() or 1) // info.world_size)
    if threads:
        torch.set_num_threads(threads)


def _resolve_dtype(name: str, device: torch.device) -> str:
    """`train.dtype` for this device (auto -> bf16 or fp32); warn once when bf16 is emulated."""
    warning = emulated_warning(name, device)
    if warning is not None and int(os.environ.get("RANK", "0")) == 0:
        print(f"[transfergen] warning: {warning}", file=sys.stderr, flush=True)
    return resolve_dtype(name, device)


@contextlib.contextmanager
def session(cfg: RunConfig) -> Iterator[Session]:
    """Join the ranks, check and create the run folder, save the resolved config."""
    device = pick_device(cfg.train.device, int(os.environ.get("LOCAL_RANK", "0")))
    cfg.train.dtype = _resolve_dtype(cfg.train.dtype, device)  # before any work; recorded resolved
    info = init_distributed(device)
    try:
        _set_threads(cfg, info, device)
        run_dir = check_run_dir(cfg)
        if info.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            save_yaml(cfg, run_dir / "run_config.yaml")
        barrier(info)
        yield Session(cfg, info, device, run_dir)
    finally:
        shutdown(info)
