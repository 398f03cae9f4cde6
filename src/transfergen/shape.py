"""A model's shape: presets, and the fully resolved `ModelShape` every module is built from.

Kept apart from `layers.py` (the building blocks) and `model.py` (the assembled model) so
that both import it and neither imports the other. No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import ModelConfig
from .errors import ConfigError

# Non-embedding parameter counts (embedding = vocab * d_model, shared with the head):
#   tiny:  1.05M non-embedding  + 1.05M embedding at vocab 8192  (~2.1M total)
#   small: 5.12M non-embedding  + 2.10M embedding at vocab 8192  (~7.2M total)
#   base: 25.70M non-embedding  + 4.19M embedding at vocab 8192  (~29.9M total)
# On a 2-core CPU `small` trains at a few thousand tokens/s; `base` wants a GPU.
PRESETS: dict[str, dict] = {
    "tiny": dict(n_layer=4, d_model=128, n_head=4, d_ff=512, max_seq_len=256),
    "small": dict(n_layer=6, d_model=256, n_head=4, d_ff=768, max_seq_len=512),
    "base": dict(n_layer=8, d_model=512, n_head=8, d_ff=1408, max_seq_len=1024),
}


@dataclass
class ModelShape:
    """The fully resolved model shape (no presets, no Nones except absent special ids)."""

    vocab_size: int
    n_layer: int
    d_model: int
    n_head: int
    n_kv_head: int
    d_ff: int
    max_seq_len: int
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    init_std: float = 0.02
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head


def check_preset(name: str) -> None:
    """An unknown `model.preset` fails naming the key and the known ones."""
    if name not in PRESETS:
        raise ConfigError(f"config key 'model.preset': unknown preset '{name}' (known: {', '.join(PRESETS)})")


def resolve_shape(cfg: ModelConfig, vocab_size: int, bos_id: int, eos_id: int, pad_id: int) -> ModelShape:
    """Fill `cfg`'s None fields from its preset and validate; errors name the `model.*` key."""
    check_preset(cfg.preset)
    p = dict(PRESETS[cfg.preset])
    for key in ("n_layer", "d_model", "n_head", "n_kv_head", "d_ff", "max_seq_len"):
        if getattr(cfg, key) is not None:
            p[key] = getattr(cfg, key)
    p.setdefault("n_kv_head", p["n_head"])
    for key, value in p.items():
        if value < 1:
            raise ConfigError(f"model.{key} must be positive, got {value}")
    if p["d_model"] % p["n_head"]:
        raise ConfigError(f"model.d_model ({p['d_model']}) must be divisible by model.n_head "
                          f"({p['n_head']})")
    if (p["d_model"] // p["n_head"]) % 2:
        raise ConfigError(f"model.d_model / model.n_head ({p['d_model'] // p['n_head']}) must be even for RoPE")
    if p["n_head"] % p["n_kv_head"]:
        raise ConfigError(f"model.n_head ({p['n_head']}) must be divisible by model.n_kv_head "
                          f"({p['n_kv_head']})")
    return ModelShape(vocab_size=vocab_size, rope_theta=cfg.rope_theta, norm_eps=cfg.norm_eps,
                      init_std=cfg.init_std, bos_token_id=bos_id, eos_token_id=eos_id,
                      pad_token_id=pad_id, **p)
