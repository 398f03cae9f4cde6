"""Building blocks of the Llama-style decoder: RMSNorm, RoPE, attention, SwiGLU, block.

The model's maths is written here once: positions and their RoPE tables
(`RotaryEmbedding`), the rotation (`apply_rope`), grouped-query attention (`repeat_kv`,
`attend`) and the projections (`LlamaAttention.qkv`). The module forward (`model.py`),
the fused decoding path (`decode.py`) and the analysis (`analysis/layers.py`) all call
these. Module names follow `transformers`' Llama exactly; the parent model relies on
that for one-to-one state dicts.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import UserError
from .shape import ModelShape

# SDPA learned grouped-query attention (enable_gqa) in torch 2.5; it skips the K/V copy.
_SDPA_GQA = tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 5)


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in fp32 like HF so bf16 runs match it."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()  # no-op (no copy) for fp32 input
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


class RotaryEmbedding(nn.Module):
    """cos/sin of every position, computed once like HF (fp32, theta^(-2i/hd)), and the
    positions a forward call needs. Non-persistent buffers: derived from the shape, kept
    out of the state dict (as HF's `rotary_emb`)."""

    def __init__(self, head_dim: int, max_seq_len: int, theta: float):
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))
        freqs = torch.outer(torch.arange(max_seq_len, dtype=torch.float), inv_freq)  # (T_max, hd/2)
        self.register_buffer("cos", freqs.cos(), persistent=False)
        self.register_buffer("sin", freqs.sin(), persistent=False)

    def forward(self, T: int, past: int = 0, position_ids: torch.Tensor | None = None,
                dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin for T new tokens after `past` cached ones, cast to `dtype`.

        Without `position_ids` a token's position is its slot: (T, hd/2) views. With them
        (B,T) (left padding: cumsum(mask) - 1) each row has its own: gathered to
        (B,1,T,hd/2), which broadcasts over heads. Positions past the table fail here.
        """
        last = past + T if position_ids is None else int(position_ids.max()) + 1
        if last > self.cos.shape[0]:
            raise UserError(f"sequence length {last} exceeds model.max_seq_len {self.cos.shape[0]}")
        if position_ids is None:
            cos, sin = self.cos[past:past + T], self.sin[past:past + T]
        else:
            cos, sin = self.cos[position_ids].unsqueeze(1), self.sin[position_ids].unsqueeze(1)
        return cos.to(dtype), sin.to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B,H,T,hd) by position, HF's rotate_half layout (pairs are i and i + hd/2).

    HF computes x*cat(cos,cos) + cat(-x2,x1)*cat(sin,sin); writing out the two halves
    gives the same numbers with half-width cos/sin (T, hd/2), no rotate_half temporary,
    and a single output allocation (the cat), which is contiguous for SDPA.
    """
    x1, x2 = x.chunk(2, dim=-1)  # each (B,H,T,hd/2), strided views
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B,KV,T,hd) -> (B,KV*n_rep,T,hd): query head h reads kv head h // n_rep (HF's repeat_kv)."""
    return x if n_rep == 1 else x.repeat_interleave(n_rep, dim=1)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
           causal: bool) -> torch.Tensor:
    """SDPA of q (B,H,T,hd) over grouped keys/values (B,KV,S,hd) -> (B,H,T,hd).

    `mask` (B|1,1,T,S) True = may attend; `causal` for an unmasked prefill. torch >= 2.5
    reads the shared K/V heads in place (enable_gqa); older torch gets them repeated.
    """
    n_rep = q.shape[1] // k.shape[1]
    if n_rep > 1 and _SDPA_GQA:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=True)
    return F.scaled_dot_product_attention(q, repeat_kv(k, n_rep), repeat_kv(v, n_rep), attn_mask=mask,
                                          is_causal=causal)


class LlamaAttention(nn.Module):
    """Causal self-attention with grouped K/V heads (n_kv_head divides n_head)."""

    def __init__(self, s: ModelShape):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = s.n_head, s.n_kv_head, s.head_dim
        self.q_proj = nn.Linear(s.d_model, s.n_head * s.head_dim, bias=False)
        self.k_proj = nn.Linear(s.d_model, s.n_kv_head * s.head_dim, bias=False)
        self.v_proj = nn.Linear(s.d_model, s.n_kv_head * s.head_dim, bias=False)
        self.o_proj = nn.Linear(s.n_head * s.head_dim, s.d_model, bias=False)

    def qkv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(B,T,d) -> q (B,H,T,hd) and k (B,KV,T,hd) rotated by position, v (B,KV,T,hd)."""
        B, T, _ = x.shape
        # (B,T,H*hd) -> (B,H,T,hd) as views; RoPE's output is a fresh contiguous tensor
        q = apply_rope(self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2), cos, sin)
        k = apply_rope(self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2), cos, sin)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        return q, k, v

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: KVCache | None = None, layer_idx: int = 0, mask: torch.Tensor | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = self.qkv(x, cos, sin)
        # Training passes neither: plain is_causal SDPA. Decoding attends over all cached
        # keys (B,KV,past+T,hd); `mask` (B|1,1,T,past+T) hides pads/future, None = see all.
        causal = cache is None and mask is None
        if cache is not None:
            k, v = cache.update(layer_idx, k, v)
            causal = mask is None and k.shape[2] == T and T > 1  # prefill of an unpadded batch
        y = attend(q, k, v, mask, causal)  # (B,H,T,hd)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))  # (B,T,d)


class LlamaMLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, s: ModelShape):
        super().__init__()
        self.gate_proj = nn.Linear(s.d_model, s.d_ff, bias=False)
        self.up_proj = nn.Linear(s.d_model, s.d_ff, bias=False)
        self.down_proj = nn.Linear(s.d_ff, s.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, s: ModelShape):
        super().__init__()
        self.self_attn = LlamaAttention(s)
        self.mlp = LlamaMLP(s)
        self.input_layernorm = RMSNorm(s.d_model, s.norm_eps)
        self.post_attention_layernorm = RMSNorm(s.d_model, s.norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: KVCache | None = None, layer_idx: int = 0, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache, layer_idx, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


# ---------------------------------------------------------------------------
# incremental decoding


class KVCache:
    """Per-layer keys/values (B, KV, max_len, hd), preallocated and filled left to right.

    Slot t holds the t-th token fed to the model (left pads included); `length` slots are
    filled. A row's RoPE position may be smaller than its slot (left padding), which is
    why the model takes `position_ids` separately.
    """

    def __init__(self, n_layer: int, batch: int, n_kv_head: int, max_len: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        shape = (batch, n_kv_head, max_len, head_dim)
        self.k = [torch.empty(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self.v = [torch.empty(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self.length, self.max_len = 0, max_len

    def update(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write (B,KV,T,hd) at slots [length, length+T); return the filled (B,KV,length+T,hd) views.

        `length` itself moves on in `advance`, once every layer has written.
        """
        end = self.length + k.shape[2]
        self.k[layer_idx][:, :, self.length:end] = k
        self.v[layer_idx][:, :, self.length:end] = v
        return self.k[layer_idx][:, :, :end], self.v[layer_idx][:, :, :end]

    def advance(self, n: int) -> None:
        self.length += n

    def reorder(self, index: torch.Tensor) -> None:
        """Row i becomes old row index[i] (beam search; expanding prompts to beams)."""
        n = self.length
        for bufs in (self.k, self.v):
            for i, buf in enumerate(bufs):
                if index.numel() == buf.shape[0]:  # same batch: copy only the filled slots
                    buf[:, :, :n] = buf[:, :, :n].index_select(0, index)
                else:
                    bufs[i] = buf.index_select(0, index)


def decode_mask(attention_mask: torch.Tensor | None, past: int, T: int,
                device: torch.device | str = "cpu") -> torch.Tensor | None:
    """SDPA boolean mask (B|1, 1, T, past+T) for T new tokens after `past` cached ones.

    `attention_mask` (B, past+T) is HF's: 1 = real token, 0 = pad. A query sees real keys
    at or before its own slot; it always sees itself, so a pad query row is never fully
    masked (that gives NaN, and NaN values leak through later layers' zero weights).
    None means "nothing to hide": a single new token then needs no mask at all.
    """
    if attention_mask is None and (T == 1 or past == 0):
        return None  # T == 1: every cached key is in the past; past == 0: is_causal
    q = torch.arange(past, past + T, device=device)[:, None]
    kpos = torch.arange(past + T, device=device)[None, :]
    if attention_mask is None:
        return (kpos <= q)[None, None]  # (1,1,T,past+T)
    keys = attention_mask.bool()[:, None, None, :]  # (B,1,1,past+T)
    if T == 1:
        return keys
    return (keys & (kpos <= q)) | (kpos == q)
