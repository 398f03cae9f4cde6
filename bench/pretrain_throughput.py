"""Pretraining throughput and memory: transfergen's loop and model against Hugging Face `Trainer`.

Both sides train the same Llama-shaped model (ours is `TransferGenLM`; HF's is
`LlamaForCausalLM` built from the same config and loaded with the same weights) on the
same token blocks, batch and sequence length, with fused AdamW and global-norm clipping,
in one run of this script so the machine's drift (up to a third between minutes) hits both.
Each measurement runs in a fresh spawned process (so its peak RSS is its own: imports +
model + training), interleaved (ours, HF, ours, HF); each side keeps its best window and
its largest peak RSS.

MFU = model FLOPs per token x tokens/s / matmul peak, where the peak is measured in this
same run with a large square matmul in the dtype measured.

    python bench/pretrain_throughput.py                  # small preset, fp32 + bf16, ~10 min
    python bench/pretrain_throughput.py --dtype bf16     # one dtype
    python bench/pretrain_throughput.py --quick          # ~5 min, bf16, ours with train.compile; last line:
                                                         # ratio_vs_hf_trainer=X (--no-compile: ours eager)
    python bench/pretrain_throughput.py --compile        # ours with train.compile in the full run too
    python bench/pretrain_throughput.py --record         # also append the table to bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from transfergen.config import ModelConfig, TrainConfig
from transfergen.model import build_model, resolve_shape
from transfergen.hub import hf_config
from transfergen.train import train

VOCAB = 8192


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 8) -> float:
    """Achieved GFLOP/s of an n x n matmul: the ceiling MFU is measured against."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


class RandomBlocks:
    """Fixed random token blocks, (B, T+1) each; the content does not affect speed."""

    def __init__(self, batch: int, seq: int, n_batches: int = 8):
        g = torch.Generator().manual_seed(0)
        self.blocks = [torch.randint(4, VOCAB, (batch, seq + 1), generator=g) for _ in range(n_batches)]
        self.i = 0

    def next_batch(self):
        blk = self.blocks[self.i % len(self.blocks)]
        self.i += 1
        return blk[:, :-1], blk[:, 1:]

    def state_dict(self):
        return {"i": self.i}

    def load_state_dict(self, s):
        self.i = s["i"]


def ours_tokens_per_s(shape, init_state, tc: TrainConfig, warm: int) -> float:
    """tokens/s of transfergen's loop over steps warm..max_steps, read from metrics.jsonl."""
    model = build_model(shape, seed=0)
    model.load_state_dict(init_state)
    with tempfile.TemporaryDirectory() as run:
        train(model, _NoSave(), RandomBlocks(tc.batch_size, tc.seq_len), [], tc, run)
        recs = [json.loads(x) for x in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    recs = {r["step"]: r for r in recs if "loss" in r}
    a, b = recs[warm], recs[tc.max_steps]
    return (b["tokens"] - a["tokens"]) / (b["elapsed_s"] - a["elapsed_s"])


class _NoSave:
    """Stands in for a tokenizer at the final checkpoint; the bench only needs the weights."""

    def save(self, out_dir):
        Path(out_dir, "tokenizer.json").write_text("{}")


def hf_tokens_per_s(shape, init_state, tc: TrainConfig, warm: int) -> float:
    """tokens/s of transformers.Trainer on LlamaForCausalLM with the same weights and data."""
    from transformers import LlamaForCausalLM, Trainer, TrainerCallback, TrainingArguments

    model = LlamaForCausalLM(hf_config(shape))
    model.load_state_dict(init_state, strict=False)
    blocks = RandomBlocks(tc.batch_size, tc.seq_len).blocks
    rows = [{"input_ids": r[:-1], "labels": r[:-1]} for b in blocks for r in b]
    stamps: dict[int, float] = {}

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            stamps[state.global_step] = time.perf_counter()

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=tc.batch_size, max_steps=tc.max_steps,
            learning_rate=tc.lr, weight_decay=tc.weight_decay, adam_beta1=tc.beta1, adam_beta2=tc.beta2,
            warmup_steps=tc.warmup_steps, max_grad_norm=tc.grad_clip, lr_scheduler_type="cosine",
            logging_strategy="no", save_strategy="no", report_to=[], use_cpu=True,
            bf16=tc.dtype == "bf16", dataloader_num_workers=0, optim="adamw_torch_fused",
            disable_tqdm=True, seed=0)
        Trainer(model=model, args=args, train_dataset=rows, callbacks=[Clock()]).train()
    tokens = (tc.max_steps - warm) * tc.batch_size * tc.seq_len
    return tokens / (stamps[tc.max_steps] - stamps[warm])


def _rss_mb() -> float:
    """This process' resident set now (MB)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _one_side(side: str, preset: str, tc: TrainConfig, warm: int, out: mp.Queue) -> None:
    """In a fresh process: (tokens/s, RSS before training, peak RSS) of one side, MB."""
    shape = resolve_shape(ModelConfig(preset=preset), VOCAB, 1, 2, 0)
    shape = replace(shape, max_seq_len=max(shape.max_seq_len, tc.seq_len))
    init_state = build_model(shape, seed=0).state_dict()
    start = _rss_mb()
    tps = (ours_tokens_per_s if side == "ours" else hf_tokens_per_s)(shape, init_state, tc, warm)
    out.put((tps, start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def run_side(side: str, preset: str, tc: TrainConfig, warm: int) -> tuple[float, float, float]:
    """`_one_side` in a spawned process (nothing of the other side's allocations stays)."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_one_side, args=(side, preset, tc, warm, q))
    proc.start()
    result = q.get()
    proc.join()
    return result


def measure(preset: str, dtype: str, steps: int, warm: int, batch: int, seq: int, rounds: int,
            compile_ours: bool = False) -> dict:
    shape = resolve_shape(ModelConfig(preset=preset), VOCAB, 1, 2, 0)
    tc = TrainConfig(max_steps=steps, batch_size=batch, seq_len=seq, dtype=dtype, warmup_steps=2,
                     log_every=1, eval_every=10 ** 9, save_every=10 ** 9, schedule="cosine")
    got: dict[str, list] = {"ours": [], "hf": []}
    for _ in range(rounds):  # interleaved so drift hits both sides alike
        for side in got:
            got[side].append(run_side(side, preset, replace(tc, compile=compile_ours and side == "ours"), warm))
            print(f"  {dtype} {side}: {got[side][-1][0]:,.0f} tok/s, peak RSS {got[side][-1][2]:,.0f} MB", flush=True)
    model = build_model(replace(shape, max_seq_len=max(shape.max_seq_len, seq)))
    flops = model.flops_per_token(seq)
    peak = matmul_peak(torch.float32 if dtype == "fp32" else torch.bfloat16)
    best = {side: max(r[0] for r in runs) for side, runs in got.items()}
    rss = {side: max(r[2] for r in runs) for side, runs in got.items()}
    grown = {side: max(r[2] - r[1] for r in runs) for side, runs in got.items()}
    return {"preset": preset, "dtype": dtype + (" (ours compiled)" if compile_ours else ""),
            "params": model.num_params(), "ours_tok_s": best["ours"],
            "hf_tok_s": best["hf"], "ratio": best["ours"] / best["hf"], "peak_gflops": peak,
            "mfu_ours": flops * best["ours"] / (peak * 1e9), "mfu_hf": flops * best["hf"] / (peak * 1e9),
            "rss_ours": rss["ours"], "rss_hf": rss["hf"], "train_rss_ours": grown["ours"], "train_rss_hf": grown["hf"]}


def machine() -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    import transformers
    from transfergen.precision import cpu_has_native_bf16

    return (f"{cpu} ({'with' if cpu_has_native_bf16() else 'without'} native bf16), {torch.get_num_threads()} "
            f"threads, load average {os.getloadavg()[0]:.2f} at the start, Python {platform.python_version()}, "
            f"torch {torch.__version__}, transformers {transformers.__version__}")


def table(rows: list[dict], header: str) -> str:
    out = [header, "", "| preset | params | dtype | ours tok/s | HF Trainer tok/s | ratio | peak RSS ours (training) "
           "| peak RSS HF (training) | matmul peak GFLOP/s | MFU ours | MFU HF |", "|---" * 11 + "|"]
    for r in rows:
        out.append(f"| {r['preset']} | {r['params'] / 1e6:.2f}M | {r['dtype']} | {r['ours_tok_s']:,.0f} | "
                   f"{r['hf_tok_s']:,.0f} | {r['ratio']:.2f}x | {r['rss_ours']:,.0f} MB ({r['train_rss_ours']:,.0f}) | "
                   f"{r['rss_hf']:,.0f} MB ({r['train_rss_hf']:,.0f}) | {r['peak_gflops']:.0f} | "
                   f"{100 * r['mfu_ours']:.0f}% | {100 * r['mfu_hf']:.0f}% |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="bf16 (unless --dtype), batch <= 8, 12 steps, one round")
    ap.add_argument("--dtype", choices=["fp32", "bf16", "both"], default=None,
                    help="default: both; --quick: bf16")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--record", action="store_true", help="append the table to bench/RESULTS.md")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="ours with train.compile (HF Trainer as it comes); default: on with --quick")
    args = ap.parse_args()
    dtypes = {"fp32": ["fp32"], "bf16": ["bf16"], "both": ["fp32", "bf16"]}[args.dtype or
                                                                           ("bf16" if args.quick else "both")]
    args.compile = args.quick if args.compile is None else args.compile
    if args.quick:
        args.batch = min(args.batch, 8)
        plan = [(d, 12, 4, 1) for d in dtypes]
    else:
        plan = [(d, 30, 5, 2) for d in dtypes]
    header = (f"### pretrain_throughput {'--quick ' if args.quick else ''}({time.strftime('%Y-%m-%d %H:%M')}, "
              f"batch {args.batch} x seq {args.seq}{', ours with train.compile' if args.compile else ''})"
              f"\n\nMachine: {machine()}")
    rows = [measure(args.preset, d, s, w, args.batch, args.seq, r, args.compile) for d, s, w, r in plan]
    text = table(rows, header)
    print(text)
    if args.record:
        with open(Path(__file__).with_name("RESULTS.md"), "a", encoding="utf-8") as fh:
            fh.write("\n" + text + "\n")
    print(f"ratio_vs_hf_trainer={rows[-1]['ratio']:.2f}")  # bf16 when measured (it is measured last)


if __name__ == "__main__":
    main()
