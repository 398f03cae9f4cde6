"""What makes our training step faster, measured: variants of our loop on the same model and data.

    plain         the model as shipped: loss.py's chunked cross-entropy fused with the head
    logits-loss   the loss as before issue 12: (B,T,V) logits, upcast whole to fp32, F.cross_entropy
    fused-proj    q/k/v and gate/up each one matmul over concatenated weights (cat every step)
    compile       torch.compile(model) (inductor), the loop unchanged

Each variant trains in a fresh spawned process (peak RSS its own), interleaved over rounds;
best tokens/s and largest peak RSS per variant. Same shape, weights and random blocks as
`pretrain_throughput.py`.

    python bench/train_variants.py --dtype bf16 --variants plain logits-loss fused-proj compile
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time
from dataclasses import replace

import torch
import torch.nn.functional as F

from pretrain_throughput import VOCAB, machine, ours_tokens_per_s
from transfergen.config import ModelConfig, TrainConfig
from transfergen.model import build_model, resolve_shape

VARIANTS = ("plain", "logits-loss", "fused-proj", "compile")


def _logits_loss(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The pre-issue-12 loss: every logit made, then upcast whole to fp32."""
    logits = hidden @ weight.t()  # (B,T,V) in the autocast dtype
    return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)


def _fused_qkv(self, x, cos, sin):
    """LlamaAttention.qkv with one matmul over [q; k; v] (the weights concatenated each call)."""
    from transfergen.layers import apply_rope

    B, T, _ = x.shape
    H, KV, hd = self.n_head, self.n_kv_head, self.head_dim
    w = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])  # (H+2KV)*hd x d
    q, k, v = F.linear(x, w).split([H * hd, KV * hd, KV * hd], dim=-1)
    q = apply_rope(q.view(B, T, H, hd).transpose(1, 2), cos, sin)
    k = apply_rope(k.view(B, T, KV, hd).transpose(1, 2), cos, sin)
    return q, k, v.view(B, T, KV, hd).transpose(1, 2)


def _fused_mlp(self, x):
    """LlamaMLP.forward with one matmul over [gate; up]."""
    gate, up = F.linear(x, torch.cat([self.gate_proj.weight, self.up_proj.weight])).chunk(2, dim=-1)
    return self.down_proj(F.silu(gate) * up)


def _apply(variant: str) -> None:
    """Patch the classes for `variant` (in the spawned process only)."""
    import transfergen.model as M
    from transfergen.layers import LlamaAttention, LlamaMLP

    if variant == "logits-loss":
        M.head_loss = _logits_loss
    elif variant == "fused-proj":
        LlamaAttention.qkv, LlamaMLP.forward = _fused_qkv, _fused_mlp
    elif variant == "compile":
        import pretrain_throughput as P

        original = P.train
        P.train = lambda model, *a, **k: original(torch.compile(model), *a, **k)


def _one(variant: str, preset: str, tc: TrainConfig, warm: int, out: mp.Queue) -> None:
    _apply(variant)
    shape = resolve_shape(ModelConfig(preset=preset), VOCAB, 1, 2, 0)
    shape = replace(shape, max_seq_len=max(shape.max_seq_len, tc.seq_len))
    init_state = build_model(shape, seed=0).state_dict()
    tps = ours_tokens_per_s(shape, init_state, tc, warm)
    out.put((tps, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def run(variant: str, preset: str, tc: TrainConfig, warm: int) -> tuple[float, float]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_one, args=(variant, preset, tc, warm, q))
    proc.start()
    result = q.get()
    proc.join()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="bf16")
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument("--preset", default="small")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warm", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    tc = TrainConfig(max_steps=args.steps, batch_size=args.batch, seq_len=args.seq, dtype=args.dtype,
                     warmup_steps=2, log_every=1, eval_every=10 ** 9, save_every=10 ** 9, schedule="cosine")
    got: dict[str, list] = {v: [] for v in args.variants}
    for _ in range(args.rounds):
        for v in args.variants:
            got[v].append(run(v, args.preset, tc, args.warm))
            print(f"  {v}: {got[v][-1][0]:,.0f} tok/s, peak RSS {got[v][-1][1]:,.0f} MB", flush=True)
    base = max(r[0] for r in got[args.variants[0]])
    print(f"### train_variants ({time.strftime('%Y-%m-%d %H:%M')}, {args.preset}, {args.dtype}, batch {args.batch} "
          f"x seq {args.seq}, steps {args.warm}..{args.steps}, {args.rounds} round(s))\n\nMachine: {machine()}\n")
    print(f"| variant | tok/s | vs {args.variants[0]} | peak RSS |\n|---|---:|---:|---:|")
    for v, rs in got.items():
        best = max(r[0] for r in rs)
        print(f"| {v} | {best:,.0f} | {best / base:.2f}x | {max(r[1] for r in rs):,.0f} MB |")


if __name__ == "__main__":
    main()
