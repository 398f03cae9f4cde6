"""Numeric precision of a training run: which dtypes a device runs, and how the loop uses them.

`train.dtype` is one of

    auto   bf16 autocast where the hardware computes in bf16 natively (CPUs with AVX512-BF16
           or AMX, CUDA devices with bf16), fp32 everywhere else
    fp32   plain fp32
    bf16   autocast to bf16; the weights, optimizer state and loss stay fp32
    fp16   autocast to fp16 with dynamic loss scaling (`GradScaler`); CUDA only

`auto` never picks bf16 on a CPU that would only emulate it: there it runs about 3x
slower than fp32 (measured: 52 vs 168 GFLOP/s for a 512x512 matmul on an Ice Lake core
without AVX512-BF16). An explicit `bf16` is still honoured there, with a warning, so
that bf16 code paths can be tested anywhere. Evaluation and decoding in `evaluate`
run in fp32 whatever the training dtype, so test scores depend only on the weights.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import ConfigError

DTYPES = ("auto", "fp32", "bf16", "fp16")
_TORCH = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX tiles)."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if any(p is not None for p in probes):
        return any(p() for p in probes if p is not None)
    flags = Path("/proc/cpuinfo")  # older torch without the probes: read the flags ourselves
    text = flags.read_text(encoding="utf-8", errors="replace") if flags.is_file() else ""
    return "avx512_bf16" in text or "amx_bf16" in text


def device_has_native_bf16(device: torch.device) -> bool:
    """bf16 in hardware: CUDA with bf16 support, or a CPU with AVX512-BF16 / AMX."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return False


def resolve_dtype(name: str, device: torch.device) -> str:
    """`train.dtype` -> the dtype this run trains in (fp32 | bf16 | fp16), or ConfigError."""
    if name not in DTYPES:
        raise ConfigError(f"config key 'train.dtype': unknown dtype '{name}' (expected one of {', '.join(DTYPES)})")
    if name == "auto":
        return "bf16" if device_has_native_bf16(device) else "fp32"
    if name == "fp16" and device.type != "cuda":
        raise ConfigError(f"config key 'train.dtype': fp16 needs a CUDA device, this run is on {device.type} "
                          "(use bf16 or fp32)")
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("config key 'train.dtype': this CUDA device has no bf16 (use fp16 or fp32)")
    if name == "bf16" and device.type not in ("cpu", "cuda"):
        raise ConfigError(f"config key 'train.dtype': bf16 autocast is not supported on {device.type} (use fp32)")
    return name


def emulated_warning(name: str, device: torch.device) -> str | None:
    """A one-line warning when an explicit bf16 will run emulated (slowly) on this CPU."""
    if name == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        return ("train.dtype=bf16 on a CPU without AVX512-BF16/AMX: bf16 is emulated and slower than "
                "fp32 here (train.dtype=auto would pick fp32)")
    return None


def autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    """The forward pass' autocast context for a resolved dtype (a no-op for fp32)."""
    if dtype in _TORCH:
        return torch.autocast(device_type=device.type, dtype=_TORCH[dtype])
    return contextlib.nullcontext()


@dataclass
class Precision:
    """How a resolved dtype enters the loop: autocast, and loss scaling for fp16.

    With fp16, gradients of small losses underflow; the scaler multiplies the loss before
    `backward`, unscales the gradients before clipping, and skips steps whose gradients
    overflowed. For fp32 and bf16 (bf16 has fp32's exponent range) every call is plain.
    """

    dtype: str
    device: torch.device
    scaler: torch.amp.GradScaler | None = None

    @classmethod
    def for_run(cls, dtype: str, device: torch.device) -> Precision:
        scaler = torch.amp.GradScaler(device.type) if dtype == "fp16" else None
        return cls(dtype, device, scaler)

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.device, self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Bring gradients back to their true scale (before clipping reads their norm)."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)  # skipped when the gradients hold inf/nan
        self.scaler.update()

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
