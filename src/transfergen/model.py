"""The decoder-only language model, its presets, and saving/loading in Hugging Face format.

`TransferGenLM` is a compact Llama: RoPE, RMSNorm, SwiGLU, grouped-query attention, no
biases, tied input embedding / output head. Its module and parameter names are exactly
those of `transformers.LlamaForCausalLM`, so a saved folder (`config.json` +
`model.safetensors`) loads in `AutoModelForCausalLM.from_pretrained` with no renaming,
and a Llama checkpoint loads back into this (faster, smaller) implementation.

Anything else that `transformers` can load is wrapped by `HFCausalLM`, which exposes the
same small interface (forward -> logits, num_params, flops_per_token, max_seq_len), so
the training loop never has to know which one it holds.
"""

from __future__ import annotations

import inspect
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig
from .errors import ConfigError, UserError
from .layers import KVCache, LlamaDecoderLayer, RMSNorm, decode_mask

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


def resolve_shape(cfg: ModelConfig, vocab_size: int, bos_id: int, eos_id: int, pad_id: int) -> ModelShape:
    """Fill `cfg`'s None fields from its preset and validate; errors name the `model.*` key."""
    if cfg.preset not in PRESETS:
        raise ConfigError(f"model.preset: unknown preset '{cfg.preset}' (known: {', '.join(PRESETS)})")
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


# ---------------------------------------------------------------------------
# the model


class LlamaBackbone(nn.Module):
    """Holds what HF's `LlamaModel` holds, so parameter names get the `model.` prefix."""

    def __init__(self, s: ModelShape):
        super().__init__()
        self.embed_tokens = nn.Embedding(s.vocab_size, s.d_model)
        self.layers = nn.ModuleList(LlamaDecoderLayer(s) for _ in range(s.n_layer))
        self.norm = RMSNorm(s.d_model, s.norm_eps)


class TransferGenLM(nn.Module):
    """Llama-architecture causal LM whose state dict is `LlamaForCausalLM`'s, one to one."""

    def __init__(self, shape: ModelShape, generator: torch.Generator | None = None):
        super().__init__()
        self.shape = shape
        self.model = LlamaBackbone(shape)
        self.lm_head = nn.Linear(shape.d_model, shape.vocab_size, bias=False)
        # Tying: the head scores tokens against the input embeddings; saves V*d params,
        # which at these sizes is a large share of the model.
        self.lm_head.weight = self.model.embed_tokens.weight
        # cos/sin for every position, computed once like HF (fp32, theta^(-2i/hd)).
        # Non-persistent: derived from the shape, so kept out of the state dict.
        hd = shape.head_dim
        inv_freq = 1.0 / (shape.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float) / hd))
        freqs = torch.outer(torch.arange(shape.max_seq_len, dtype=torch.float), inv_freq)  # (T, hd/2)
        self.register_buffer("rope_cos", freqs.cos(), persistent=False)
        self.register_buffer("rope_sin", freqs.sin(), persistent=False)
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """N(0, init_std) everywhere, o_proj/down_proj scaled by 1/sqrt(2*n_layer); norms = 1.

        Why the scaling (GPT-2): every layer adds two branch outputs to the residual
        stream, so at init its variance grows with 2*n_layer; shrinking the projections
        that write into it keeps the stream's scale independent of depth.
        """
        std, resid_std = self.shape.init_std, self.shape.init_std / math.sqrt(2 * self.shape.n_layer)
        for name, p in self.named_parameters():  # shared embed/head weight is visited once
            if p.dim() == 1:
                p.fill_(1.0)
            else:
                s = resid_std if name.endswith(("o_proj.weight", "down_proj.weight")) else std
                nn.init.normal_(p, mean=0.0, std=s, generator=generator)

    @property
    def max_seq_len(self) -> int:
        return self.shape.max_seq_len

    @property
    def vocab_size(self) -> int:
        return self.shape.vocab_size

    def forward(self, input_ids: torch.Tensor, *, cache: KVCache | None = None,
                position_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                logits_to_keep: int = 0) -> torch.Tensor:
        """(B,T) token ids -> (B,T,V) next-token logits (the last `logits_to_keep` only if > 0).

        Training passes ids only. Decoding passes a `KVCache` (the new keys/values are
        appended, attention covers every cached slot), `position_ids` (B,T) (left padding:
        cumsum(mask) - 1; default: the slot index) and `attention_mask` (B, past+T), HF's
        1 = real token / 0 = pad over cached + new slots (default: nothing hidden).
        """
        T, past = input_ids.shape[1], cache.length if cache is not None else 0
        last = past + T if position_ids is None else int(position_ids.max()) + 1
        if last > self.shape.max_seq_len:
            raise UserError(f"sequence length {last} exceeds model.max_seq_len {self.shape.max_seq_len}")
        x = self.model.embed_tokens(input_ids)  # (B,T,d)
        if position_ids is None:
            cos, sin = self.rope_cos[past:past + T], self.rope_sin[past:past + T]  # (T,hd/2) views
        else:  # per-row positions: (B,T,hd/2) gathered, (B,1,T,hd/2) to broadcast over heads
            cos, sin = self.rope_cos[position_ids].unsqueeze(1), self.rope_sin[position_ids].unsqueeze(1)
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        mask = None if cache is None and attention_mask is None else decode_mask(attention_mask, past, T, x.device)
        for i, layer in enumerate(self.model.layers):
            x = layer(x, cos, sin, cache, i, mask)
        if cache is not None:
            cache.advance(T)
        if logits_to_keep:  # a prefill needs the last position only: skips (T-1) head matmuls
            x = x[:, -logits_to_keep:]
        return self.lm_head(self.model.norm(x))  # (B,T,V)

    def num_params(self, trainable_only: bool = False, exclude_embeddings: bool = False) -> int:
        """Unique parameters (the tied head counts once); optionally without the embedding."""
        n = sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
        emb = self.model.embed_tokens.weight
        if exclude_embeddings and (emb.requires_grad or not trainable_only):
            n -= emb.numel()
        return n

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs (forward + backward) per token, PaLM-style.

        6 * N counts every weight matmul (2 flops per multiply-add forward, 4 backward),
        with N = non-embedding params + the output head (the embedding lookup is free but
        the head matmul is not, even when tied). 12 * n_layer * d_model * seq_len counts
        the attention scores and weighted sum (QK^T, AV) over the full window.
        """
        s = self.shape
        n = self.num_params(exclude_embeddings=True) + s.vocab_size * s.d_model
        return 6.0 * n + 12.0 * s.n_layer * s.d_model * seq_len


def build_model(shape: ModelShape, seed: int | None = None) -> TransferGenLM:
    """A randomly initialised TransferGenLM; `seed` makes the init reproducible."""
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    return TransferGenLM(shape, generator=gen)


# ---------------------------------------------------------------------------
# any transformers causal LM, behind the same interface


class HFCausalLM(nn.Module):
    """Wraps a `transformers` causal LM (`self.hf`) to look like TransferGenLM."""

    def __init__(self, hf: nn.Module):
        super().__init__()
        self.hf = hf

    @property
    def max_seq_len(self) -> int | None:
        c = self.hf.config
        return getattr(c, "max_position_embeddings", None) or getattr(c, "n_positions", None)

    @property
    def vocab_size(self) -> int:
        return self.hf.get_output_embeddings().weight.shape[0]

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B,T) token ids -> (B,T,V) logits."""
        return self.hf(input_ids=input_ids, use_cache=False).logits

    def num_params(self, trainable_only: bool = False, exclude_embeddings: bool = False) -> int:
        """Unique parameters; `exclude_embeddings` drops every nn.Embedding (as HF does)."""
        return self.hf.num_parameters(only_trainable=trainable_only, exclude_embeddings=exclude_embeddings)

    def flops_per_token(self, seq_len: int) -> float:
        """~6 * (non-embedding params + output head), plus attention when the config says how."""
        n = self.num_params(exclude_embeddings=True) + self.hf.get_output_embeddings().weight.numel()
        c = self.hf.config
        layers, width = getattr(c, "num_hidden_layers", None), getattr(c, "hidden_size", None)
        attn = 12.0 * layers * width * seq_len if layers and width else 0.0
        return 6.0 * n + attn


# ---------------------------------------------------------------------------
# Hugging Face format


def hf_config(shape: ModelShape) -> Any:
    """The `transformers.LlamaConfig` describing `shape` (tied, bias-free, plain RoPE)."""
    from transformers import LlamaConfig

    fields = set(inspect.signature(LlamaConfig).parameters) | set(getattr(LlamaConfig, "__annotations__", {}))
    if "rope_parameters" in fields:  # transformers >= 5
        rope = {"rope_parameters": {"rope_type": "default", "rope_theta": float(shape.rope_theta)}}
    else:
        rope = {"rope_theta": float(shape.rope_theta)}
    return LlamaConfig(
        architectures=["LlamaForCausalLM"], vocab_size=shape.vocab_size, hidden_size=shape.d_model,
        intermediate_size=shape.d_ff, num_hidden_layers=shape.n_layer,
        num_attention_heads=shape.n_head, num_key_value_heads=shape.n_kv_head,
        head_dim=shape.head_dim, hidden_act="silu", max_position_embeddings=shape.max_seq_len,
        initializer_range=shape.init_std, rms_norm_eps=shape.norm_eps, tie_word_embeddings=True,
        attention_bias=False, mlp_bias=False, bos_token_id=shape.bos_token_id,
        eos_token_id=shape.eos_token_id, pad_token_id=shape.pad_token_id, **rope,
    )


def _unwrap(model: nn.Module) -> nn.Module:
    """Strip torch.compile / DDP wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def save_model(model: nn.Module, out_dir: str | Path) -> None:
    """Write `model` to `out_dir` in Hugging Face format (config, safetensors, generation config)."""
    from transformers import GenerationConfig

    model, out = _unwrap(model), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(model, TransferGenLM):
        from safetensors.torch import save_file

        s = model.shape
        hf_config(s).save_pretrained(str(out))
        # lm_head.weight *is* embed_tokens.weight; safetensors refuses shared storage and
        # HF re-ties it from tie_word_embeddings, so it is left out.
        state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
        save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
        GenerationConfig(bos_token_id=s.bos_token_id, eos_token_id=s.eos_token_id,
                         pad_token_id=s.pad_token_id).save_pretrained(str(out))
    elif isinstance(model, HFCausalLM):
        hf = model.hf
        # transformers 5 always writes safetensors and dropped the flag
        safe = "safe_serialization" in inspect.signature(hf.save_pretrained).parameters
        hf.save_pretrained(str(out), **({"safe_serialization": True} if safe else {}))
        if not (out / "generation_config.json").is_file():
            GenerationConfig.from_model_config(hf.config).save_pretrained(str(out))
    else:
        raise TypeError(f"save_model: cannot save {type(model).__name__}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"unreadable {path.name}: {exc}", path=str(path)) from None
    if not isinstance(data, dict):
        raise UserError(f"{path.name} must hold a JSON object", path=str(path))
    return data


def _llama_shape(c: dict) -> ModelShape | None:
    """The ModelShape of a Llama config.json that TransferGenLM reproduces exactly, else None."""
    if c.get("model_type") != "llama" or not c.get("tie_word_embeddings", False):
        return None
    if c.get("hidden_act", "silu") != "silu" or c.get("attention_bias") or c.get("mlp_bias"):
        return None
    if c.get("attention_dropout") or isinstance(c.get("eos_token_id"), list):
        return None
    rope = c.get("rope_parameters") or {}
    scaling = c.get("rope_scaling") or {}
    if rope.get("rope_type", "default") != "default" or set(rope) - {"rope_type", "rope_theta"}:
        return None
    if scaling.get("rope_type", scaling.get("type", "default")) != "default":
        return None
    try:
        d, h = int(c["hidden_size"]), int(c["num_attention_heads"])
        kv = int(c.get("num_key_value_heads") or h)
        if d % h or h % kv or (d // h) % 2 or int(c.get("head_dim") or d // h) != d // h:
            return None
        return ModelShape(
            vocab_size=int(c["vocab_size"]), n_layer=int(c["num_hidden_layers"]), d_model=d,
            n_head=h, n_kv_head=kv, d_ff=int(c["intermediate_size"]),
            max_seq_len=int(c.get("max_position_embeddings", 2048)),
            rope_theta=float(rope.get("rope_theta", c.get("rope_theta", 10000.0))),
            norm_eps=float(c.get("rms_norm_eps", 1e-6)), init_std=float(c.get("initializer_range", 0.02)),
            bos_token_id=c.get("bos_token_id"), eos_token_id=c.get("eos_token_id"),
            pad_token_id=c.get("pad_token_id"))
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None  # unusual config: let transformers judge it


def _read_safetensors(folder: Path) -> dict[str, torch.Tensor] | None:
    """All tensors of `model.safetensors` or its sharded index; None when neither exists."""
    from safetensors.torch import load_file

    if (folder / "model.safetensors").is_file():
        files = [folder / "model.safetensors"]
    elif (folder / "model.safetensors.index.json").is_file():
        index = _read_json(folder / "model.safetensors.index.json")
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict):
            raise UserError("model.safetensors.index.json has no weight_map", path=str(folder))
        files = [folder / name for name in sorted(set(weight_map.values()))]
    else:
        return None
    state: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            state.update(load_file(str(f)))
        except Exception as exc:  # missing shard, truncated or corrupt file
            raise UserError(f"cannot read weights: {_first_line(exc)}", path=str(f)) from None
    return state


def _load_fast(folder: Path, shape: ModelShape, state: dict[str, torch.Tensor]) -> TransferGenLM:
    """Build TransferGenLM and copy `state` in, checking names and shapes."""
    model = TransferGenLM(shape)
    state = {k: v for k, v in state.items() if not k.endswith("rotary_emb.inv_freq")}
    state.pop("lm_head.weight", None)  # tied: the embedding is the head
    expected = set(model.state_dict()) - {"lm_head.weight"}
    missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
    if missing:
        raise UserError(f"checkpoint is missing tensor '{missing[0]}' ({len(missing)} missing)",
                        path=str(folder))
    if unexpected:
        raise UserError(f"checkpoint has unexpected tensor '{unexpected[0]}'", path=str(folder))
    try:
        model.load_state_dict(state, strict=False)  # copies in place, so the tie survives
    except RuntimeError as exc:  # shape mismatch between config.json and the tensors
        raise UserError(f"weights do not match config.json: {str(exc).splitlines()[-1].strip()}",
                        path=str(folder)) from None
    return model


def load_model(path: str | Path, *, dtype: torch.dtype = torch.float32) -> nn.Module:
    """Load a saved model folder: TransferGenLM for compatible Llama checkpoints, else HFCausalLM.

    The result is in eval mode and cast to `dtype`.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise UserError("model folder not found", path=str(folder))
    if not (folder / "config.json").is_file():
        raise UserError("no config.json in model folder", path=str(folder))
    shape = _llama_shape(_read_json(folder / "config.json"))
    state = _read_safetensors(folder) if shape is not None else None
    if shape is not None and state is not None:
        return _load_fast(folder, shape, state).to(dtype).eval()
    from transformers import AutoModelForCausalLM

    try:
        hf = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # unknown architecture, missing/corrupt weights, ...
        raise UserError(f"cannot load model: {_first_line(exc)}", path=str(folder)) from None
    return HFCausalLM(hf.to(dtype)).eval()


def build_like(path: str | Path, seed: int | None = None) -> nn.Module:
    """Random weights in the architecture of the model folder at `path` (scratch baselines).

    The transfer arm and its scratch baseline then differ only in the initial weights.
    """
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise UserError("model.like: no config.json in model folder", path=str(folder))
    shape = _llama_shape(_read_json(folder / "config.json"))
    if shape is not None:
        return build_model(shape, seed=seed)
    from transformers import AutoConfig, AutoModelForCausalLM

    if seed is not None:
        torch.manual_seed(seed)
    try:
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
        return HFCausalLM(AutoModelForCausalLM.from_config(config))
    except Exception as exc:  # unknown architecture, bad config
        raise UserError(f"model.like: cannot build the architecture: {_first_line(exc)}",
                        path=str(folder)) from None

