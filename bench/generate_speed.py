"""Generation speed: transfergen's `generate` against transformers' `generate` on the same model.

Both sides decode the same `small`-preset Llama (vocab 8192, seeded random weights; ours
is `TransferGenLM`, theirs `LlamaForCausalLM` with the same state dict, `use_cache=True`)
from the same prompts (random ids, lengths 8..24, so batches are left padded), with eos
disabled so every row produces exactly `max_new_tokens` tokens on both sides. Runs are
interleaved (ours, theirs, ours, ...) and each side keeps its best time, so drift of the
machine hits both. tokens/s = rows x max_new_tokens / seconds (prefill included).

Threads default to 1: tiny decode-step ops gain little from more, and on a shared 2-core
box OpenMP spin-waiting makes multi-threaded runs erratic. `--threads N` to change.

    python bench/generate_speed.py            # 64 new tokens, best of 3
    python bench/generate_speed.py --quick    # < 60 s: 32 new tokens, best of 2
"""

from __future__ import annotations

import argparse
import time
import types

import torch

from transfergen.config import ModelConfig
from transfergen.generate import GenerationConfig, generate
from transfergen.model import build_model, resolve_shape
from transfergen.hub import hf_config

VOCAB, BOS, PAD = 8192, 1, 0
CASES = [(1, 1), (1, 4), (32, 1), (32, 4)]  # (batch, num_beams)


def models() -> tuple[torch.nn.Module, torch.nn.Module]:
    """(ours, transformers') with identical seeded weights; no eos anywhere."""
    from transformers import LlamaForCausalLM

    shape = resolve_shape(ModelConfig(preset="small"), vocab_size=VOCAB, bos_id=BOS, eos_id=None, pad_id=PAD)
    ours = build_model(shape, seed=0).eval()
    hf = LlamaForCausalLM(hf_config(shape)).eval()
    hf.load_state_dict(ours.state_dict())
    hf.generation_config.eos_token_id = None
    return ours, hf


def prompt_batch(batch: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = [16] if batch == 1 else torch.randint(8, 25, (batch,), generator=g).tolist()
    return [[BOS, *torch.randint(4, VOCAB, (n - 1,), generator=g).tolist()] for n in lengths]


def run_ours(model: torch.nn.Module, prompts: list[list[int]], beams: int, new: int) -> list[list[int]]:
    tok = types.SimpleNamespace(bos_id=BOS, eos_id=None, pad_id=PAD)
    return generate(model, tok, prompts, GenerationConfig(max_new_tokens=new, num_beams=beams, batch_size=32))


@torch.no_grad()
def run_hf(hf: torch.nn.Module, prompts: list[list[int]], beams: int, new: int) -> list[list[int]]:
    """Left-padded batch, attention mask, cache on: how transformers is meant to be used."""
    P = max(map(len, prompts))
    ids = torch.tensor([[PAD] * (P - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p in prompts])
    out = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                      num_beams=beams, do_sample=False, eos_token_id=None, pad_token_id=PAD, use_cache=True)
    return out[:, P:].tolist()


def best_time(fn, reps: int) -> tuple[float, list[list[int]]]:
    best, out = float("inf"), []
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def run(quick: bool, threads: int = 1) -> list[dict]:
    """One row per (batch, num_beams): tokens/s of both and the ratio ours / transformers."""
    torch.set_num_threads(threads)
    ours, hf = models()
    new, reps = (32, 2) if quick else (64, 3)
    rows = []
    for batch, beams in CASES:
        prompts = prompt_batch(batch)
        run_ours(ours, prompts, beams, 4), run_hf(hf, prompts, beams, 4)  # warm-up: allocator, lazy init
        t_ours = t_hf = float("inf")
        for _ in range(reps):  # interleaved: drift hits both sides alike
            t, a = best_time(lambda p=prompts, k=beams: run_ours(ours, p, k, new), 1)
            t_ours = min(t_ours, t)
            t, b = best_time(lambda p=prompts, k=beams: run_hf(hf, p, k, new), 1)
            t_hf = min(t_hf, t)
        assert all(len(x) == new for x in a) and all(len(x) == new for x in b)
        n_tok = batch * new
        rows.append(dict(batch=batch, num_beams=beams, new_tokens=new, ours_tok_s=n_tok / t_ours,
                         hf_tok_s=n_tok / t_hf, ratio=t_hf / t_ours, same_tokens=a == b))
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| batch | beams | new tokens | ours tok/s | transformers tok/s | ratio | same tokens |",
             "|---:|---:|---:|---:|---:|---:|:---:|"]
    lines += [f"| {r['batch']} | {r['num_beams']} | {r['new_tokens']} | {r['ours_tok_s']:.0f} | "
              f"{r['hf_tok_s']:.0f} | {r['ratio']:.2f}x | {'yes' if r['same_tokens'] else 'no'} |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="32 new tokens, best of 2 (< 60 s)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import transformers

    t0 = time.perf_counter()
    rows = run(args.quick, args.threads)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, {args.threads} thread(s), "
          f"small preset, vocab {VOCAB}, greedy / beam search, eos off\n")
    print(table(rows))
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
