"""The decoder-only language model: `TransferGenLM`, and `HFCausalLM` for anything else.

`TransferGenLM` is a compact Llama: RoPE, RMSNorm, SwiGLU, grouped-query attention, no
biases, tied input embedding / output head. Its module and parameter names are exactly
those of `transformers.LlamaForCausalLM`, so a saved folder (`config.json` +
`model.safetensors`) loads in `AutoModelForCausalLM.from_pretrained` with no renaming,
and a Llama checkpoint loads back into this (faster, smaller) implementation.

Anything else that `transformers` can load is wrapped by `HFCausalLM`, which exposes the
same small interface (forward -> logits, or the loss given labels; num_params, flops_per_token, max_seq_len), so
the training loop never has to know which one it holds.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .layers import KVCache, LlamaDecoderLayer, RMSNorm, RotaryEmbedding, decode_mask
from .loss import head_loss, lm_loss
from .shape import PRESETS, ModelShape, resolve_shape

__all__ = ["BLOCK_LISTS", "PRESETS", "HFCausalLM", "ModelShape", "TransferGenLM", "block_list", "build_model",
           "resolve_shape", "unwrap"]

# ---------------------------------------------------------------------------
# the model


class LlamaBackbone(nn.Module):
    """Holds what HF's `LlamaModel` holds, so parameter names get the `model.` prefix."""

    def __init__(self, s: ModelShape):
        super().__init__()
        self.embed_tokens = nn.Embedding(s.vocab_size, s.d_model)
        self.layers = nn.ModuleList(LlamaDecoderLayer(s) for _ in range(s.n_layer))
        self.norm = RMSNorm(s.d_model, s.norm_eps)
        self.rotary_emb = RotaryEmbedding(s.head_dim, s.max_seq_len, s.rope_theta)  # no parameters


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

    @classmethod
    def from_state_dict(cls, shape: ModelShape, state: dict[str, torch.Tensor]) -> TransferGenLM:
        """The model holding `state`'s tensors themselves, in their dtype: built on the meta device
        (no random init, no second copy of the weights), the tensors assigned, the head tied
        again, the RoPE tables (derived, never saved) computed. RuntimeError on a shape mismatch."""
        with torch.device("meta"):
            model = cls(shape)
        model.load_state_dict(state, strict=False, assign=True)
        model.lm_head.weight = model.model.embed_tokens.weight
        model.model.rotary_emb = RotaryEmbedding(shape.head_dim, shape.max_seq_len, shape.rope_theta)
        return model

    @property
    def max_seq_len(self) -> int:
        return self.shape.max_seq_len

    @property
    def vocab_size(self) -> int:
        return self.shape.vocab_size

    @property
    def dtype(self) -> torch.dtype:
        return self.model.embed_tokens.weight.dtype

    def forward(self, input_ids: torch.Tensor, *, cache: KVCache | None = None,
                position_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                logits_to_keep: int = 0, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B,T) token ids -> (B,T,V) next-token logits (the last `logits_to_keep` only if > 0);
        with `labels` (B,T) the mean next-token loss instead (`loss.head_loss`: no logits made).

        Training passes ids only. Decoding passes a `KVCache` (the new keys/values are
        appended, attention covers every cached slot), `position_ids` (B,T) (left padding:
        cumsum(mask) - 1; default: the slot index) and `attention_mask` (B, past+T), HF's
        1 = real token / 0 = pad over cached + new slots (default: nothing hidden).
        """
        T, past = input_ids.shape[1], cache.length if cache is not None else 0
        x = self.model.embed_tokens(input_ids)  # (B,T,d)
        cos, sin = self.model.rotary_emb(T, past, position_ids, x.dtype)
        mask = None if cache is None and attention_mask is None else decode_mask(attention_mask, past, T, x.device)
        for i, layer in enumerate(self.model.layers):
            x = layer(x, cos, sin, cache, i, mask)
        if cache is not None:
            cache.advance(T)
        if logits_to_keep:  # a prefill needs the last position only: skips (T-1) head matmuls
            x = x[:, -logits_to_keep:]
        if labels is None:
            return self.lm_head(self.model.norm(x))  # (B,T,V)
        if type(self.lm_head) is nn.Linear:  # an adapted head (not ours) goes the plain way
            return head_loss(self.model.norm(x), self.lm_head.weight, labels)
        return lm_loss(self.lm_head(self.model.norm(x)), labels)

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

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B,T) token ids -> (B,T,V) logits; with `labels` (B,T) the mean next-token loss."""
        logits = self.hf(input_ids=input_ids, use_cache=False).logits
        return logits if labels is None else lm_loss(logits, labels)

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


# Where common causal LMs keep their stack of blocks (bottom to top). Matched as a suffix, so
# HFCausalLM's `hf.` prefix and other wrappers need no entry of their own. A model whose list
# is named otherwise is found by its blocks' class (`_no_split_modules`, which HF models declare).
BLOCK_LISTS = ("model.layers", "transformer.h", "gpt_neox.layers")


def block_list(model: nn.Module) -> str:
    """The dotted name of `model`'s ModuleList of transformer blocks, bottom to top.

    Our model and Llama/Qwen/Mistral keep it at `model.layers`, GPT-2 at `transformer.h`;
    any other transformers model is recognised by the class of its blocks (e.g. OPT's
    `model.decoder.layers` of `OPTDecoderLayer`). UserError when there is none."""
    from .errors import UserError

    lists = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m)]
    for name, _ in lists:
        if name.endswith(BLOCK_LISTS):
            return name
    block_classes = {c for m in model.modules() for c in (getattr(m, "_no_split_modules", None) or [])}
    for name, mods in lists:
        if all(type(b).__name__ in block_classes for b in mods):
            return name
    raise UserError(f"cannot find the transformer blocks of {type(unwrap(model)).__name__} (looked for a module "
                    f"list named *{', *'.join(BLOCK_LISTS)}, or one of the classes the model names as blocks)")


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside torch.compile / DDP wrappers (itself when unwrapped)."""
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner
