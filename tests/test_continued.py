"""Continued pretraining (`pretrain --init RUN`): DAPT/TAPT start from the run's weights and
keep its tokenizer, may grow the vocabulary with the fine-tuning machinery, and refuse a
vocabulary to grow without a model to grow."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from transfergen.cli import main
from transfergen.hub import load_model
from transfergen.pretrain import run_pretrain
from transfergen.tokenizer import TextTokenizer

from conftest import tiny_config

DOMAIN = ["the sauce simmers", "the baker kneads", "fresh basil", "the oven", "a pinch of salt", "the dough"]
ACTS = ["rests overnight", "needs more garlic", "smells of thyme", "turns golden"]


def _domain_corpus(path: Path, n: int = 300) -> Path:
    """A domain the tiny pretrained model never read (its corpus is the royal-court template)."""
    rng = random.Random(5)
    path.write_text("\n".join(f"{rng.choice(DOMAIN).capitalize()} {rng.choice(ACTS)}, and {rng.choice(DOMAIN)} "
                              f"{rng.choice(ACTS)}." for _ in range(n)) + "\n", encoding="utf-8")
    return path


def _val_losses(run: Path) -> list[float]:
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["val_loss"] for r in recs if "val_loss" in r]


def test_continued_pretraining_starts_from_the_run(tiny_pretrained, tmp_path, one_thread):
    domain = _domain_corpus(tmp_path / "domain.txt")
    steps = {"max_steps": 20, "eval_every": 10, "save_every": 20, "eval_at_start": True}
    dapt = tmp_path / "dapt"
    run_pretrain(tiny_config(domain, dapt, init=str(tiny_pretrained), train=steps))
    scratch = tmp_path / "scratch"
    run_pretrain(tiny_config(domain, scratch, tokenizer={"path": str(tiny_pretrained)}, train=steps))
    old, new = TextTokenizer.load(tiny_pretrained), TextTokenizer.load(dapt)
    assert new.fingerprint() == old.fingerprint()  # the tokenizer is kept
    # Step 0: the continued run holds the pretrained weights (lower loss than random ones, same tokens).
    dapt_loss, scratch_loss = _val_losses(dapt), _val_losses(scratch)
    assert dapt_loss[0] < scratch_loss[0] - 0.3
    assert dapt_loss[-1] < dapt_loss[0] - 0.3  # and it learns the new domain
    a, b = load_model(tiny_pretrained).state_dict(), load_model(dapt).state_dict()
    assert a.keys() == b.keys() and any(not torch.equal(a[k], b[k]) for k in a)


def test_continued_pretraining_grows_the_vocabulary(tiny_pretrained, tmp_path, one_thread, capsys):
    domain = _domain_corpus(tmp_path / "domain.txt")
    out = tmp_path / "grown"
    args = ["pretrain", "--init", str(tiny_pretrained), "--corpus", str(domain), "--out", str(out),
            "--vocab.add=12", f"--vocab.extend_from={domain}", "--model.preset=tiny",
            "--train.max_steps=6", "--train.batch_size=8", "--train.seq_len=32", "--train.eval_every=6",
            "--train.save_every=6", "--train.eval_batches=2", "--train.threads=1", "--train.dtype=fp32",
            "--data.num_workers=1", "--data.val_fraction=0.1"]
    assert main(args) == 0
    old, new = TextTokenizer.load(tiny_pretrained), TextTokenizer.load(out)
    report = json.loads((out / "vocab_report.json").read_text())
    assert new.vocab_size == old.vocab_size + 12 == load_model(out).model.embed_tokens.weight.shape[0]
    assert report["n_added"] == 12
    # Old ids keep their meaning; the domain text now needs fewer tokens.
    text = "The baker kneads the dough, and fresh basil turns golden."
    assert len(new.encode(text)) < len(old.encode(text))
    assert old.decode(old.encode("my lord")) == new.decode(new.encode("my lord"))

    capsys.readouterr()
    assert main(["pretrain", "--corpus", str(domain), "--out", str(tmp_path / "bad"), "--vocab.add=4",
                 f"--vocab.extend_from={domain}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "'vocab.add'" in err and "init" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())


@pytest.mark.parametrize("flags,key", [(["--vocab.add=4"], "vocab.extend_from")])
def test_vocab_flags_come_together(tiny_pretrained, tmp_path, capsys, flags, key):
    domain = _domain_corpus(tmp_path / "domain.txt")
    assert main(["pretrain", "--init", str(tiny_pretrained), "--corpus", str(domain),
                 "--out", str(tmp_path / "o"), *flags]) == 2
    assert f"'{key}'" in capsys.readouterr().err
