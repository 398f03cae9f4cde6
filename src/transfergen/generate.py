"""Text generation: greedy, sampling and beam search, batched with left padding and a KV cache.

    cfg = GenerationConfig(max_new_tokens=32, num_beams=4, length_penalty=0.6)
    new_ids = generate(model, tok, [prompt_ids(tok, task, src) for src in sources], cfg)

Prompts are token-id lists (e.g. `data.seq2seq.prompt_ids`) or strings (encoded as
[bos] + encode(text)). They are sorted by length and run `batch_size` at a time, left
padded so every row's next token sits in the last column; a row's RoPE position is
cumsum(mask) - 1, so padding changes nothing but float rounding.

Semantics follow `transformers`' `generate` (5.x): the same logits processors in the same
order (repetition penalty, no-repeat-ngram, then temperature, top-k, top-p when sampling;
on log-probs in beam search), and beam search is its vectorised algorithm step for step
(2 * num_beams candidates, length penalty on finished hypotheses, the early-stopping
heuristic), so a LlamaForCausalLM with the same weights returns the same tokens.

`TransferGenLM` runs the loops below on its `KVCache`. Any other model (`HFCausalLM`, or a
bare transformers model) is driven through its own `generate` with the same settings,
so it keeps its own cache, mask and position handling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .errors import UserError
from .decode import PackedLM, pack
from .layers import KVCache
from .model import HFCausalLM, TransferGenLM, unwrap

NEG = -1.0e9  # transformers' "never pick this" score in beam search (not -inf: sums stay finite)


@dataclass
class GenerationConfig:
    """Decoding settings; field names and meanings are transformers' `GenerationConfig`'s."""

    max_new_tokens: int = 64
    num_beams: int = 1  # 1 = greedy / sampling
    length_penalty: float = 1.0  # beam score = sum logprob / new_len ** length_penalty
    early_stopping: bool | str = True  # True | False | "never", as in transformers
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1.0 = off
    repetition_penalty: float = 1.0  # CTRL: seen tokens' scores * p if < 0 else / p
    no_repeat_ngram_size: int = 0  # 0 = off
    batch_size: int = 32  # prompts per forward (each expands to num_beams rows)
    seed: int | None = None  # sampling RNG; None = torch's global RNG
    fused: bool = True  # decode on fused, transposed weight copies (decode.py): faster, 2x weight memory

    def validate(self) -> None:
        """Raise UserError for settings transformers would reject (or we do not support)."""
        checks = [
            (self.max_new_tokens >= 0, "max_new_tokens must be >= 0"),
            (self.num_beams >= 1, "num_beams must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (not (self.do_sample and self.num_beams > 1), "beam sampling (do_sample with num_beams > 1) "
                                                          "is not supported"),
            (self.temperature > 0, "temperature must be > 0 (use do_sample=False for greedy)"),
            (self.top_k >= 0 and 0.0 <= self.top_p <= 1.0, "top_k must be >= 0 and top_p in [0, 1]"),
            (self.repetition_penalty > 0, "repetition_penalty must be > 0"),
            (self.no_repeat_ngram_size >= 0, "no_repeat_ngram_size must be >= 0"),
            (self.early_stopping in (True, False, "never"), "early_stopping must be True, False or 'never'"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(f"generation: {message}")


# ---------------------------------------------------------------------------
# logits processors (transformers' semantics, batched over rows)


def _penalize(scores: torch.Tensor, hist: torch.Tensor, real: torch.Tensor, cfg: GenerationConfig) -> torch.Tensor:
    """Repetition penalty, then no-repeat-ngram, on scores (N,V) given history (N,t).

    `real` (N,t) is False on left pads, which are neither "seen" tokens (as transformers'
    prompt_ignore_length) nor n-grams (transformers scans them, which differs only if the
    model emits the pad id; skipping them keeps batched == one prompt at a time).
    """
    N, V = scores.shape
    if cfg.repetition_penalty != 1.0:
        idx = hist.masked_fill(~real, V)  # pads -> a spare column past the vocab, dropped below
        padded = F.pad(scores, (0, 1))  # (N,V+1)
        seen = padded.gather(1, idx)
        seen = torch.where(seen < 0, seen * cfg.repetition_penalty, seen / cfg.repetition_penalty)
        scores = padded.scatter(1, idx, seen)[:, :V]
    n, t = cfg.no_repeat_ngram_size, hist.shape[1]
    if n and t >= n:
        prefix = hist[:, t + 1 - n:]  # (N,n-1): the next token would complete prefix + [tok]
        windows = hist.unfold(1, n, 1)  # (N,t-n+1,n): every n-gram so far
        match = (windows[..., :-1] == prefix[:, None]).all(-1)  # (N,t-n+1)
        match &= real.unfold(1, n, 1).all(-1)  # windows over left pads never match
        banned = scores.new_zeros((N, V + 1), dtype=torch.bool)
        banned.scatter_(1, torch.where(match, windows[..., -1], V), True)
        scores = scores.masked_fill(banned[:, :V], float("-inf"))
    return scores


def _warp(scores: torch.Tensor, cfg: GenerationConfig) -> torch.Tensor:
    """Sampling warpers in transformers' order: temperature, top-k, top-p (nucleus)."""
    if cfg.temperature != 1.0:
        scores = scores / cfg.temperature
    if cfg.top_k:
        kth = torch.topk(scores, min(cfg.top_k, scores.shape[-1])).values[:, -1:]  # (N,1)
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if cfg.top_p < 1.0:
        # Drop the low tail whose total mass is <= 1 - top_p; the top token always stays.
        sorted_scores, order = torch.sort(scores, descending=False)
        drop = sorted_scores.softmax(-1).cumsum(-1) <= 1 - cfg.top_p
        drop[:, -1] = False
        scores = scores.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return scores


# ---------------------------------------------------------------------------
# our model: prefill + one-token steps over a KV cache


class _Decoder:
    """Feeds a left-padded batch through TransferGenLM: a prefill, then one token per row per step.

    An unpadded batch passes no mask and no positions (slot = position), the cheapest path.
    """

    def __init__(self, model: TransferGenLM | PackedLM, ids: torch.Tensor, mask: torch.Tensor, budget: int):
        s, N, P = model.shape, ids.shape[0], ids.shape[1]
        self.model, self.P = model, P
        self.cache = KVCache(s.n_layer, N, s.n_kv_head, P + budget, s.head_dim, model.dtype, ids.device)
        self.padded = not bool(mask.all())
        self.mask = torch.cat([mask, mask.new_ones(N, budget)], 1)  # (N,P+budget): new tokens are real
        self.lens = mask.sum(-1)  # (N,): real prompt tokens = position of the first new token
        pos = (mask.cumsum(-1) - 1).clamp(min=0) if self.padded else None
        self.logits = self._run(ids, pos, mask)  # (N,V): scores for the first new token

    def _run(self, ids: torch.Tensor, pos: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor:
        m = mask if self.padded else None
        return self.model(ids, cache=self.cache, position_ids=pos, attention_mask=m, logits_to_keep=1)[:, -1]

    def expand(self, rows: torch.Tensor) -> None:
        """Row i becomes old row rows[i] (prompts -> beams, then beam reordering)."""
        self.cache.reorder(rows)
        self.mask, self.lens, self.logits = self.mask[rows], self.lens[rows], self.logits[rows]

    def step(self, tok: torch.Tensor, t: int) -> torch.Tensor:
        """Feed new token number t (0-based) of every row, (N,); returns (N,V) next logits."""
        pos = (self.lens + t)[:, None] if self.padded else None
        self.logits = self._run(tok[:, None], pos, self.mask[:, :self.P + t + 1])
        return self.logits


def _strip(tokens: list[int], eos: int | None) -> list[int]:
    """New tokens up to (not including) the first eos."""
    return tokens[:tokens.index(eos)] if eos in tokens else tokens


@torch.no_grad()
def _greedy_or_sample(model: TransferGenLM | PackedLM, ids: torch.Tensor, mask: torch.Tensor, budget: int,
                      cfg: GenerationConfig, eos: int | None, pad: int,
                      gen: torch.Generator | None) -> list[list[int]]:
    """One token per row per step; finished rows emit pad (as transformers) until all are done."""
    N, P = ids.shape
    dec = _Decoder(model, ids, mask, budget)
    seq = torch.cat([ids, ids.new_full((N, budget), pad)], 1)  # (N,P+budget): history for penalties
    penalize = cfg.repetition_penalty != 1.0 or cfg.no_repeat_ngram_size > 0
    done = torch.zeros(N, dtype=torch.bool, device=ids.device)
    n_new = 0
    for t in range(budget):
        scores = dec.logits.float()
        if penalize:
            scores = _penalize(scores, seq[:, :P + t], dec.mask[:, :P + t].bool(), cfg)
        if cfg.do_sample:
            tok = torch.multinomial(F.softmax(_warp(scores, cfg), -1), 1, generator=gen)[:, 0]
        else:
            tok = scores.argmax(-1)
        tok = tok.masked_fill(done, pad)
        seq[:, P + t], n_new = tok, t + 1
        if eos is not None:
            done |= tok == eos
        if t == budget - 1 or bool(done.all()):
            break
        dec.step(tok, t)
    return [_strip(row, eos) for row in seq[:, P:P + n_new].tolist()]


@torch.no_grad()
def _beam_search(model: TransferGenLM | PackedLM, ids: torch.Tensor, mask: torch.Tensor, budget: int,
                 cfg: GenerationConfig, eos: int | None, pad: int) -> list[list[int]]:
    """transformers' vectorised beam search (`_beam_search`, 5.x), step for step.

    Per prompt: K running beams and a pool of K finished hypotheses. Each step takes the
    top 2K (beam, token) continuations by summed log-prob; those ending in eos (or at the
    length limit) and ranked in the top K enter the pool scored sum / new_len ** length_penalty,
    the best K others keep running. The prompt is prefilled once, then copied to its K beams.
    """
    B, P = ids.shape
    K, L, dev = cfg.num_beams, P + budget, ids.device
    keep = 2 * K  # max(2, 1 + n_eos) * K with one eos: always K non-eos candidates left
    dec = _Decoder(model, ids, mask, budget)
    dec.expand(torch.arange(B, device=dev).repeat_interleave(K))  # row b*K + k = beam k of prompt b
    run_seq = torch.cat([ids, ids.new_full((B, budget), pad)], 1)[:, None].repeat(1, K, 1)  # (B,K,L)
    fin_seq = run_seq.clone()
    run_score = torch.zeros(B, K, device=dev)
    run_score[:, 1:] = NEG  # only beam 0 live at first, else K copies of the same continuation
    fin_score = torch.full((B, K), NEG, device=dev)
    fin = torch.zeros(B, K, dtype=torch.bool, device=dev)  # pool slot holds a finished hypothesis
    improvable = torch.ones(B, 1, dtype=torch.bool, device=dev)
    top_k_mask = torch.arange(keep, device=dev) < K  # only the top K candidates may finish
    penalize = cfg.repetition_penalty != 1.0 or cfg.no_repeat_ngram_size > 0
    for cur in range(P, L):  # cur = tokens per row so far (prompt included)
        logp = F.log_softmax(dec.logits.float(), -1)  # (B*K,V)
        if penalize:  # transformers applies processors to log-probs in beam search
            logp = _penalize(logp, run_seq.view(B * K, L)[:, :cur], dec.mask[:, :cur].bool(), cfg)
        V = logp.shape[-1]
        top_lp, top_idx = torch.topk((logp.view(B, K, V) + run_score[..., None]).view(B, K * V), keep)
        parent, tok = top_idx // V, top_idx % V  # (B,2K): which beam, which token
        top_seq = torch.take_along_dim(run_seq, parent[..., None], 1)  # (B,2K,L) copy
        top_seq[:, :, cur] = tok
        hits = (tok == eos) if eos is not None else torch.zeros_like(tok, dtype=torch.bool)
        hits |= cur + 1 >= L  # transformers' MaxLengthCriteria
        # running beams for the next step: the best K candidates that did not just finish
        run_lp = top_lp + hits.to(torch.float32) * NEG
        nxt = torch.topk(run_lp, K)[1]
        run_seq, run_score = torch.take_along_dim(top_seq, nxt[..., None], 1), run_lp.gather(1, nxt)
        src = parent.gather(1, nxt)  # (B,K): the beam each new running beam extends
        fin_seq, fin_score, fin = _update_pool(fin_seq, fin_score, fin, top_seq, top_lp, hits & top_k_mask,
                                               improvable, cur + 1 - P, cfg)
        improvable = improvable & _may_improve(run_score, fin_score, fin, cur + 1 - P, budget, cfg)
        if not (bool(improvable.any()) and not (bool(fin.all()) and cfg.early_stopping is True)
                and not bool(hits.all())):
            break
        dec.expand((src + torch.arange(B, device=dev)[:, None] * K).view(-1))
        dec.step(run_seq[:, :, cur].reshape(-1), cur - P)
    return [_strip(row, eos) for row in fin_seq[:, 0, P:].tolist()]


def _update_pool(fin_seq: torch.Tensor, fin_score: torch.Tensor, fin: torch.Tensor, top_seq: torch.Tensor,
                 top_lp: torch.Tensor, just: torch.Tensor, improvable: torch.Tensor, new_len: int,
                 cfg: GenerationConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Merge the just-finished candidates (B,2K) into the pool (B,K); keep the best K.

    Same float ops as transformers' `_update_finished_beams`, so equal scores tie alike.
    """
    s = top_lp / (new_len ** cfg.length_penalty)
    full = torch.all(fin, dim=-1, keepdim=True) & (cfg.early_stopping is True)  # (B,1): pool closed
    s = s + full.to(torch.float32) * NEG
    s = s + (~improvable).to(torch.float32) * NEG
    s = s + (~just) * NEG  # still-running candidates cannot enter the pool
    merged = torch.cat((fin_score, s), 1)
    best = torch.topk(merged, k=fin.shape[1])[1]  # (B,K)
    seqs = torch.take_along_dim(torch.cat((fin_seq, top_seq), 1), best[..., None], 1)
    return seqs, merged.gather(1, best), torch.cat((fin, just), 1).gather(1, best)


def _may_improve(run_score: torch.Tensor, fin_score: torch.Tensor, fin: torch.Tensor, new_len: int,
                 budget: int, cfg: GenerationConfig) -> torch.Tensor:
    """(B,1): can the best running beam still beat the worst finished one? (transformers' heuristic)"""
    length = budget if cfg.early_stopping == "never" and cfg.length_penalty > 0.0 else new_len
    best_running = run_score[:, :1] / (length ** cfg.length_penalty)
    worst = torch.where(fin, torch.min(fin_score, dim=1, keepdim=True)[0], NEG)  # (B,K)
    return torch.any(best_running > worst, dim=-1, keepdim=True)


# ---------------------------------------------------------------------------
# any transformers model: its own generate


def _hf_generate(hf: Any, ids: torch.Tensor, mask: torch.Tensor, budget: int, cfg: GenerationConfig,
                 eos: int | None, pad: int, bos: int | None) -> list[list[int]]:
    """transformers' generate with our settings spelled out (so its generation_config cannot leak in)."""
    kw: dict[str, Any] = dict(
        max_new_tokens=budget, num_beams=cfg.num_beams, do_sample=cfg.do_sample,
        repetition_penalty=float(cfg.repetition_penalty), no_repeat_ngram_size=cfg.no_repeat_ngram_size,
        eos_token_id=eos, pad_token_id=pad, bos_token_id=bos, use_cache=True)
    if cfg.num_beams > 1:  # only then: transformers warns about beam flags without beams
        kw.update(length_penalty=float(cfg.length_penalty), early_stopping=cfg.early_stopping)
    if cfg.do_sample:
        kw.update(temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p)
    with torch.no_grad():
        out = hf.generate(input_ids=ids, attention_mask=mask, **kw)
    return [_strip(row, eos) for row in out[:, ids.shape[1]:].tolist()]


# ---------------------------------------------------------------------------
# public API


def _plan(lengths: list[int], max_seq_len: int | None, cfg: GenerationConfig) -> list[tuple[int, list[int]]]:
    """(budget, prompt indices) batches: sorted by length (little padding), one budget each.

    A prompt's budget is max_new_tokens, cut so that its last position fits max_seq_len.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    plan: list[tuple[int, list[int]]] = []
    for i in order:
        budget = cfg.max_new_tokens if not max_seq_len else min(cfg.max_new_tokens, max_seq_len - lengths[i])
        if budget < 0 or lengths[i] == 0:
            raise UserError(f"prompt {i} has {lengths[i]} tokens; the model takes 1 to "
                            f"{max_seq_len or 'any number of'} tokens")
        if plan and plan[-1][0] == budget and len(plan[-1][1]) < cfg.batch_size:
            plan[-1][1].append(i)
        else:
            plan.append((budget, [i]))
    return plan


def _left_pad(rows: list[list[int]], pad: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,P) ids and mask (1 = real token), padded on the left."""
    P = max(len(r) for r in rows)
    ids = torch.full((len(rows), P), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), P), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, P - len(r):], mask[i, P - len(r):] = torch.tensor(r, dtype=torch.long), 1
    return ids.to(device), mask.to(device)


def generate(model: torch.nn.Module, tokenizer: Any, prompts: list[list[int]] | list[str],
             cfg: GenerationConfig | None = None) -> list[list[int]]:
    """New token ids for each prompt (eos and anything after it stripped), in prompt order.

    `tokenizer` needs eos_id (None = never stop), pad_id, and bos_id + encode for strings.
    """
    cfg = cfg or GenerationConfig()
    cfg.validate()
    rows = [[tokenizer.bos_id, *tokenizer.encode(p)] if isinstance(p, str) else list(p) for p in prompts]
    model = unwrap(model)
    eos, pad = tokenizer.eos_id, tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.eos_id
    pad = pad if pad is not None else 0
    device = next(model.parameters()).device
    gen = torch.Generator(device).manual_seed(cfg.seed) if cfg.seed is not None else None
    was_training, out = model.training, [[] for _ in rows]
    model.eval()
    lm = pack(model) if cfg.fused else model  # built once per call: weights are fixed meanwhile
    try:
        for budget, idx in _plan([len(r) for r in rows], getattr(model, "max_seq_len", None), cfg):
            ids, mask = _left_pad([rows[i] for i in idx], pad, device)
            if budget == 0:
                res: list[list[int]] = [[] for _ in idx]
            elif not isinstance(model, TransferGenLM):
                hf = model.hf if isinstance(model, HFCausalLM) else model
                with torch.random.fork_rng(devices=[]):  # a seed must not reset the caller's RNG
                    if cfg.seed is not None:
                        torch.manual_seed(cfg.seed)
                    res = _hf_generate(hf, ids, mask, budget, cfg, eos, pad, getattr(tokenizer, "bos_id", None))
            elif cfg.num_beams > 1:
                res = _beam_search(lm, ids, mask, budget, cfg, eos, pad)
            else:
                res = _greedy_or_sample(lm, ids, mask, budget, cfg, eos, pad, gen)
            for i, r in zip(idx, res, strict=True):
                out[i] = r
    finally:
        model.train(was_training)
    return out


def generate_text(model: torch.nn.Module, tokenizer: Any, prompts: list[list[int]] | list[str],
                  cfg: GenerationConfig | None = None) -> list[str]:
    """`generate`, decoded (special tokens skipped): the continuation only, not the prompt."""
    return [tokenizer.decode(ids) for ids in generate(model, tokenizer, prompts, cfg)]


def sample(model: torch.nn.Module, tokenizer: Any, prompt: str, *, max_new_tokens: int = 100,
           temperature: float = 0.8, top_k: int | None = 50, seed: int | None = None) -> str:
    """Continue `prompt` (temperature 0 = greedy); returns the prompt followed by the continuation.

    Stops at eos or at the model's max_seq_len.
    """
    cfg = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=temperature > 0,
                           temperature=temperature if temperature > 0 else 1.0, top_k=top_k or 0,
                           seed=seed, batch_size=1)
    return prompt + generate_text(model, tokenizer, [prompt], cfg)[0]
