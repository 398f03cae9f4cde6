"""Text generation, first cut: temperature / top-k sampling from any loaded model.

Works with our TransferGenLM and with wrapped Hugging Face models alike, since both
map input ids (B, T) to logits (B, T, V). The context is re-run every step (no KV
cache yet); full decoding (beam search, cache, batching) comes with the metrics work.
"""

from __future__ import annotations

import torch

from .tokenizer import TextTokenizer


@torch.no_grad()
def sample(model: torch.nn.Module, tokenizer: TextTokenizer, prompt: str, *, max_new_tokens: int = 100,
           temperature: float = 0.8, top_k: int | None = 50, seed: int | None = None) -> str:
    """Continue `prompt`; returns the prompt followed by the sampled continuation."""
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    model.eval()
    ids = [tokenizer.bos_id] + tokenizer.encode(prompt)
    x = torch.tensor([ids], dtype=torch.long)  # (1, T)
    window = getattr(model, "max_seq_len", None) or 1024
    new: list[int] = []
    for _ in range(max_new_tokens):
        logits = model(x[:, -window:])[:, -1, :].float()  # (1, V): next-token scores
        nxt = _pick(logits, temperature, top_k, gen)
        if nxt == tokenizer.eos_id:
            break
        new.append(nxt)
        x = torch.cat([x, torch.tensor([[nxt]])], dim=1)
    return prompt + tokenizer.decode(new)


def _pick(logits: torch.Tensor, temperature: float, top_k: int | None, gen: torch.Generator | None) -> int:
    """Greedy at temperature 0, else sample from the (top-k truncated) softmax."""
    if temperature <= 0:
        return int(logits.argmax(-1))
    logits = logits / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=gen))
