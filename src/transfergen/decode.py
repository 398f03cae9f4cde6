"""A decode-time view of `TransferGenLM` with fused, pre-transposed weights.

Why: at batch 1 a decoding step multiplies one row vector by every weight matrix, so it
is bound by reading the weights and by per-op overhead, not by arithmetic. Measured
here (small preset, 1 thread) the module forward spends ~11 ms per token; this path
spends ~6 ms, for three reasons:
- q/k/v are one matmul and gate/up another (7 -> 4 matmuls per layer, fewer views);
- every weight is stored transposed, (in, out) contiguous, so `x @ W` streams it in the
  layout the CPU GEMM reads fastest for a single row (the tied head: ~190 vs ~270 us);
- no nn.Module dispatch per projection.
The price is one extra copy of the weights for the duration of a `generate` call.
It pays only for a few rows: from ~16 rows per matmul on (a prefill, batch 32, 32 x 4
beams) the module forward's (out, in) layout was as fast or faster (batch 32 x 4 beams:
3.0 s vs 3.5 s), so calls with more than `MAX_ROWS` tokens go to the module forward.

The numbers are the module forward's up to float rounding (a test checks logits to
1e-5 and tokens exactly); anything that is not a plain `nn.Linear` (e.g. LoRA adapters
injected for training) is not packed: `pack` returns the model itself then.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import KVCache, apply_rope, attend, decode_mask
from .model import TransferGenLM

MAX_ROWS = 16  # tokens per call (B*T) up to which the packed path is used

_PROJ = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
         "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


class PackedLM:
    """Callable like `TransferGenLM.forward` for decoding (a KVCache is required)."""

    def __init__(self, model: TransferGenLM):
        self.model, self.shape = model, model.shape
        self.dtype = model.model.embed_tokens.weight.dtype
        self.layers = []
        with torch.no_grad():
            for layer in model.model.layers:
                a, m = layer.self_attn, layer.mlp
                self.layers.append((
                    layer.input_layernorm,
                    torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]).t().contiguous(),
                    a.o_proj.weight.t().contiguous(),
                    layer.post_attention_layernorm,
                    torch.cat([m.gate_proj.weight, m.up_proj.weight]).t().contiguous(),
                    m.down_proj.weight.t().contiguous(),
                ))
            self.head = model.lm_head.weight.t().contiguous()  # (d, V)

    @torch.no_grad()
    def __call__(self, input_ids: torch.Tensor, *, cache: KVCache, position_ids: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, logits_to_keep: int = 0) -> torch.Tensor:
        """(B,T) ids -> (B,T|keep,V) logits; same contract as `TransferGenLM.forward`."""
        lm = self.model
        B, T = input_ids.shape
        if B * T > MAX_ROWS:
            return lm(input_ids, cache=cache, position_ids=position_ids, attention_mask=attention_mask,
                      logits_to_keep=logits_to_keep)
        past = cache.length
        x = lm.model.embed_tokens(input_ids)  # (B,T,d)
        cos, sin = lm.model.rotary_emb(T, past, position_ids, x.dtype)  # the module forward's positions
        mask = decode_mask(attention_mask, past, T, x.device)
        causal = mask is None and past == 0 and T > 1
        for i, weights in enumerate(self.layers):
            x = self._layer(x, weights, cos, sin, cache, i, mask, causal)
        cache.advance(T)
        if logits_to_keep:
            x = x[:, -logits_to_keep:]
        return lm.model.norm(x) @ self.head  # (B,T,V)

    def _layer(self, x: torch.Tensor, weights: tuple, cos: torch.Tensor, sin: torch.Tensor,
               cache: KVCache, i: int, mask: torch.Tensor | None, causal: bool) -> torch.Tensor:
        """One pre-norm block; the math of `LlamaDecoderLayer.forward`."""
        norm1, qkv, o, norm2, gate_up, down = weights
        s, (B, T, d) = self.shape, x.shape
        H, KV, hd = s.n_head, s.n_kv_head, s.head_dim
        # (B,T,(H+2KV)*hd) -> (B,H+2KV,T,hd) -> q (B,H,T,hd), k and v (B,KV,T,hd)
        q, k, v = (norm1(x) @ qkv).view(B, T, H + 2 * KV, hd).transpose(1, 2).split([H, KV, KV], 1)
        k, v = cache.update(i, apply_rope(k, cos, sin), v)
        y = attend(apply_rope(q, cos, sin), k, v, mask, causal)  # (B,H,T,hd)
        x = x + y.transpose(1, 2).reshape(B, T, d) @ o
        gate, up = (norm2(x) @ gate_up).split(s.d_ff, -1)  # (B,T,ff) each
        return x + (F.silu(gate) * up) @ down


def pack(model: nn.Module) -> PackedLM | nn.Module:
    """A PackedLM for a plain TransferGenLM; anything else (adapters, HF models) unchanged."""
    if not isinstance(model, TransferGenLM):
        return model
    plain = all(type(layer.get_submodule(p)) is nn.Linear for layer in model.model.layers for p in _PROJ)
    return PackedLM(model) if plain and type(model.lm_head) is nn.Linear else model
