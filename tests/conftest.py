"""Shared fixtures: a small corpus written by the tests and a tiny run config."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from transfergen.config import RunConfig, build_config

SUBJECTS = ["the king", "a soldier", "my lord", "the queen", "this night", "our army", "the fool", "her heart"]
VERBS = ["speaks of", "remembers", "dreams of", "fears", "betrays", "defends", "loves", "forgets"]
OBJECTS = ["the crown", "a distant shore", "the old castle", "his brother", "the morning", "sweet music",
           "the bloody field", "a broken promise"]


def make_corpus(path: Path, n_lines: int = 400, seed: int = 0) -> Path:
    """Template English with real regularities a tiny model can learn in a few dozen steps."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        s, v, o = rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS)
        lines.append(f"{s.capitalize()} {v} {o}, and {rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}.")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return make_corpus(tmp_path / "corpus.txt")


TINY = {
    "model": {"preset": "tiny", "d_model": 64, "n_layer": 2, "n_head": 4, "d_ff": 128, "max_seq_len": 64},
    "tokenizer": {"vocab_size": 320},
    "data": {"val_fraction": 0.1, "num_workers": 1},
    "train": {"max_steps": 30, "batch_size": 8, "seq_len": 32, "lr": 3e-3, "warmup_steps": 5,
              "log_every": 1, "eval_every": 10, "eval_batches": 2, "save_every": 10, "threads": 1,
              "dtype": "fp32"},  # pinned: numeric comparisons must not depend on the CPU's bf16 unit
}


def tiny_config(corpus: Path, out: Path, **sections) -> RunConfig:
    """A RunConfig for a ~50k-parameter model; `sections` deep-merge over TINY."""
    from transfergen.config import merge

    data = merge(TINY, {"out": str(out), "data": {"corpus": [str(corpus)]}})
    return build_config(RunConfig, [], merge(data, sections))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny ops: extra threads only add sync (on a busy 2-core box, 100x slower); restored after."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_pretrained(tmp_path_factory) -> Path:
    """One tiny model pretrained for 40 steps on the template corpus, shared by every test that
    needs a pretrained model (fine-tuning, studies, analysis, the README's API block).

    Tests only read it: each fine-tunes, evaluates or analyses into its own folder.
    """
    from transfergen.pretrain import run_pretrain

    root = tmp_path_factory.mktemp("tiny_pretrained")
    run_pretrain(tiny_config(make_corpus(root / "corpus.txt"), root / "run", train={"max_steps": 40}))
    return root / "run"


@pytest.fixture(scope="session")
def tiny_finetuned(tiny_pretrained, tmp_path_factory) -> Path:
    """`tiny_pretrained` fine-tuned for 30 steps on subject -> 'verb object.' with the prompt
    'Continue: {source} =>', a format the folder records (README: plain transformers)."""
    import json

    from transfergen.config import merge
    from transfergen.finetune import run_finetune

    root = tmp_path_factory.mktemp("tiny_finetuned")
    rng = random.Random(3)
    with open(root / "pairs.jsonl", "w", encoding="utf-8") as fh:
        for _ in range(200):
            s, v, o = rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS)
            fh.write(json.dumps({"source": s.capitalize(), "target": f"{v} {o}."}) + "\n")
    task = {"reader": "jsonl", "path": str(root / "pairs.jsonl"), "prompt": "Continue: {source} =>",
            "val_size": 20, "test_size": 20, "max_source_tokens": 16, "max_target_tokens": 16}
    cfg = merge(TINY, {"out": str(root / "run"), "init": str(tiny_pretrained), "task": task,
                       "train": {"max_steps": 30, "eval_every": 30, "save_every": 30}})
    run_finetune(build_config(RunConfig, [], cfg))
    return root / "run"
