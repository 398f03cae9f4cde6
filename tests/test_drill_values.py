"""The drill's table of bad values: every row is one command a careless user could type, and
must end in exit 2 with one line `transfergen: error: ...` naming the key, flag or file,
before any work (no run folder, no study runs). Filesystem faults, the lock, resume drift and
remote code are drilled in test_drill_faults.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from transfergen.cli import main

from conftest import make_corpus
from test_cli import TINY_FLAGS

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this row needs a machine without CUDA")
NO_MPS = pytest.mark.skipif(torch.backends.mps.is_available(), reason="this row needs a machine without MPS")


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_pretrained) -> dict[str, Path]:
    """A corpus, task files (good, and with a misspelt metric), a study over the shared tiny
    model, and a plain file standing where a folder should be."""
    root = tmp_path_factory.mktemp("drill")
    pairs = root / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"source": f"the king {i}", "target": f"der könig {i}"}) + "\n"
                             for i in range(40)), encoding="utf-8")
    task = {"reader": "jsonl", "path": str(pairs), "val_size": 4, "test_size": 4, "max_source_tokens": 16,
            "max_target_tokens": 16, "metrics": ["bleu", "rouge"]}
    (root / "task.yaml").write_text(yaml.safe_dump(task))
    (root / "blue.yaml").write_text(yaml.safe_dump({**task, "metrics": ["blue"]}))
    study = {"task": str(root / "task.yaml"), "pretrained": str(tiny_pretrained),
             "base": {"train": {"max_steps": 4, "batch_size": 4, "threads": 1}},
             "arms": [{"name": "scratch", "init": "scratch"}, {"name": "full"}], "sizes": [20], "seeds": [0]}
    (root / "study.json").write_text(json.dumps(study))
    (root / "a_file").write_text("not a folder\n")
    return {"root": root, "corpus": make_corpus(root / "corpus.txt"), "task": root / "task.yaml",
            "blue": root / "blue.yaml", "model": tiny_pretrained, "file": root / "a_file"}


def pretrain(w, out, *flags):
    return ["pretrain", "--corpus", str(w["corpus"]), *TINY_FLAGS, "--out", str(out), *flags]


def finetune(w, out, *flags):
    return ["finetune", "--init", str(w["model"]), "--task", str(w["task"]), "--out", str(out),
            "--train.threads=1", *flags]


def evaluate(w, out, *flags):
    return ["evaluate", "--model", str(w["model"]), "--task", str(w["task"]), "--out", str(out), *flags]


def generate(w, out, *flags):
    return ["generate", "--model", str(w["model"]), "--prompt", "The king", *flags]


def study(w, out, **changes):
    """A study file with `changes` over the good one, written next to the run folder."""
    data = {**json.loads((w["root"] / "study.json").read_text()), **changes}
    folder = Path(out).parent
    path = (folder if folder.is_dir() else w["root"]) / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return ["study", str(path), "--out", str(out)]


ROWS = [
    # pretraining: counts, rates, names, the machine, the folders
    (lambda w, o: pretrain(w, o, "--train.batch_size=0"), "config key 'train.batch_size': must be >= 1, got 0"),
    (lambda w, o: pretrain(w, o, "--train.save_every=0"), "config key 'train.save_every': must be >= 1, got 0"),
    (lambda w, o: pretrain(w, o, "--train.eval_every=0"), "config key 'train.eval_every': must be >= 1, got 0"),
    (lambda w, o: pretrain(w, o, "--train.log_every=0"), "config key 'train.log_every': must be >= 1, got 0"),
    (lambda w, o: pretrain(w, o, "--train.lr=-1"), "config key 'train.lr': must be > 0, got -1.0"),
    (lambda w, o: pretrain(w, o, "--train.grad_accum=0"), "config key 'train.grad_accum': must be >= 1, got 0"),
    (lambda w, o: pretrain(w, o, "--train.max_steps=0"), "config key 'train.max_steps': must be >= 1, got 0"),
    (lambda w, o: pretrain(w, o, "--train.seed=-1"), "config key 'train.seed': must be >= 0, got -1"),
    (lambda w, o: pretrain(w, o, "--train.beta2=1"), "config key 'train.beta2': must be in [0, 1), got 1.0"),
    (lambda w, o: pretrain(w, o, "--train.warmup_steps=-5"), "config key 'train.warmup_steps': must be >= 0"),
    (lambda w, o: pretrain(w, o, "--train.max_minutes=0"), "config key 'train.max_minutes': must be > 0"),
    (lambda w, o: pretrain(w, o, "--train.dtype=fp8"), "config key 'train.dtype': unknown dtype 'fp8'"),
    pytest.param(lambda w, o: pretrain(w, o, "--train.dtype=fp16"), "fp16 needs a CUDA device", marks=NO_CUDA),
    (lambda w, o: pretrain(w, o, "--train.device=tpu"), "config key 'train.device': unknown device 'tpu'"),
    pytest.param(lambda w, o: pretrain(w, o, "--train.device=cuda"), "asks for CUDA device 0, but this machine "
                 "has 0", marks=NO_CUDA),
    pytest.param(lambda w, o: pretrain(w, o, "--train.device=mps"), "'train.device': 'mps' asks for Apple's GPU",
                 marks=NO_MPS),
    (lambda w, o: pretrain(w, o, "--train.parallel=zero"), "config key 'train.parallel': must be one of ddp, fsdp"),
    (lambda w, o: pretrain(w, o, "--train.schedule=linear"), "config key 'train.schedule': expected one of"),
    (lambda w, o: pretrain(w, o, "--model.preset=huge"), "config key 'model.preset': unknown preset 'huge'"),
    (lambda w, o: pretrain(w, o, "--model.n_head=3"), "model.d_model (64) must be divisible by model.n_head"),
    (lambda w, o: pretrain(w, o, "--model.n_layer=0"), "config key 'model.n_layer': must be >= 1, got 0"),
    (lambda w, o: pretrain(w, o, "--train.seq_len=100"), "sequences of 100 tokens, more than the model's max_seq_len"),
    (lambda w, o: pretrain(w, o, "--tokenizer.vocab_size=100"), "config key 'tokenizer.vocab_size': must be >= 260"),
    (lambda w, o: pretrain(w, o, "--data.val_fraction=1"), "config key 'data.val_fraction': must be in [0, 1)"),
    (lambda w, o: pretrain(w, o, "--data.doc_sep=para"), "unknown data.doc_sep 'para'"),
    (lambda w, o: pretrain(w, o, "--data.num_workers=0"), "config key 'data.num_workers': must be >= 1"),
    (lambda w, o: pretrain(w, o, "--train.best_metric=bleu"), "'train.best_metric': 'bleu' is not among"),
    (lambda w, o: pretrain(w, o, "--train.patience=3"), "'train.patience' is set, but train.best_metric is not"),
    (lambda w, o: pretrain(w, o, "--init", str(o.parent / "nope")), "config key 'init': folder"),
    (lambda w, o: pretrain(w, o, "--corpus", str(o.parent / "missing.txt")), "missing.txt: file not found"),
    # fine-tuning: strategies, tasks and their metrics, decoding
    (lambda w, o: finetune(w, o, "--strategy", "fulll"), "unknown strategy 'fulll'"),
    (lambda w, o: finetune(w, o, "--strategy", "lora", "--strategy.lora_rank=0"), "'strategy.lora_rank': must be >= 1"),
    (lambda w, o: finetune(w, o, "--strategy", "discriminative", "--strategy.lr_decay=0"),
     "'strategy.lr_decay': must be in (0, 1], got 0.0"),
    (lambda w, o: finetune(w, o, "--task", str(w["blue"])), "blue.yaml: config key 'task.metrics': unknown metric"),
    (lambda w, o: finetune(w, o, "--task.max_target_tokens=1"), "'task.max_target_tokens': must be >= 2, got 1"),
    (lambda w, o: finetune(w, o, "--train.best_metric=bleu"), "task metrics need eval.generate=true"),
    (lambda w, o: finetune(w, o, "--eval.generate=true", "--train.best_metric=blue"), "'blue' is not among"),
    (lambda w, o: finetune(w, o, "--eval.num_beams=0"), "config key 'eval.num_beams': must be >= 1, got 0"),
    (lambda w, o: finetune(w, o, "--train.max_examples=0"), "config key 'train.max_examples': must be >= 1"),
    (lambda w, o: finetune(w, o, "--vocab.add=5"), "'vocab.extend_from' is empty but vocab.add > 0"),
    (lambda w, o: finetune(w, o, "--train.parallel=fsdp", "--strategy", "full+gradual"),
     "config key 'train.parallel': fsdp cannot run strategy 'gradual'"),
    (lambda w, o: finetune(w, o, "--train.parallel=fsdp", "--eval.generate=true"),
     "fsdp cannot decode during training"),
    (lambda w, o: finetune(w, o, "--init", "scratch", "--model.like", str(o.parent / "nope")),
     "config key 'model.like': folder"),
    # evaluate and generate flags
    (lambda w, o: evaluate(w, o, "--limit", "-3"), "evaluate: argument --limit: must be >= 1, got -3"),
    (lambda w, o: evaluate(w, o, "--limit", "0"), "argument --limit: must be >= 1, got 0"),
    (lambda w, o: evaluate(w, o, "--eval.max_new_tokens=0"), "config key 'eval.max_new_tokens': must be >= 1"),
    (lambda w, o: evaluate(w, o, "--text", str(o.parent / "missing.txt")), "missing.txt: file not found"),
    (lambda w, o: evaluate(w, o, "--task", str(w["blue"])), "unknown metric 'blue'"),
    (lambda w, o: evaluate(w, o, "--device", "tpu"), "config key '--device': unknown device 'tpu'"),
    pytest.param(lambda w, o: generate(w, o, "--device", "cuda"), "'--device': 'cuda' asks for CUDA device 0",
                 marks=NO_CUDA),
    (lambda w, o: generate(w, o, "--temperature", "-1"), "generate: argument --temperature: must be >= 0, got -1"),
    (lambda w, o: generate(w, o, "--temperature", "warm"), "argument --temperature: expected float, got 'warm'"),
    (lambda w, o: generate(w, o, "--top-p", "0"), "argument --top-p/--top_p: must be in (0, 1], got 0"),
    (lambda w, o: generate(w, o, "--top-k", "-1", "--greedy"), "argument --top-k/--top_k: must be >= 0"),
    (lambda w, o: generate(w, o, "--num-beams", "0"), "argument --num-beams/--num_beams: must be >= 1"),
    (lambda w, o: generate(w, o, "--max-new-tokens", "0"), "must be >= 1, got 0"),
    (lambda w, o: generate(w, o, "--repetition-penalty", "0"), "must be > 0, got 0"),
    # studies: validated whole before the first run, the study file named
    (lambda w, o: study(w, o, arms=[{"name": "x", "strategy": {"name": "fulll"}}]), "arm 'x': "),
    (lambda w, o: study(w, o, sizes=[-5]), "config key 'sizes': every item must be >= 1, got [-5]"),
    (lambda w, o: study(w, o, seeds=[]), "config key 'seeds': must not be empty, got []"),
    (lambda w, o: study(w, o, metric="blue"), "config key 'metric': 'blue' is not a score of the task's metrics"),
    (lambda w, o: study(w, o, task=str(w["blue"])), "config key 'task': "),
    (lambda w, o: study(w, o, workers=0), "config key 'workers': must be >= 1, got 0"),
    (lambda w, o: study(w, o, seed_sizes=[7]), "config key 'seed_sizes': 7 is not one of the sizes"),
    (lambda w, o: study(w, o, baseline="lede"), "config key 'baseline': must be one of auto, lead, copy, none"),
    (lambda w, o: study(w, o, arms=[{"name": "x", "strategy": {"name": "full", "lr_decay": 0.5}}]),
     "arm 'x': config key 'strategy.lr_decay' is an option of strategy 'discriminative'"),
    (lambda w, o: study(w, o, base={"train": {"lr": 0}}), "config key 'train.lr': must be > 0"),
]


@pytest.mark.parametrize("argv, needle", ROWS)
def test_bad_value_is_one_line_before_any_work(world, tmp_path, capsys, argv, needle):
    out = tmp_path / "out"
    args = argv(world, out)
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("transfergen: error: "), err
    assert needle in err[0], err[0]
    if args[0] == "study":
        assert str(tmp_path / "study.yaml") in err[0]  # the study file is named
        assert not (out / "runs").exists()
    else:
        assert not out.exists()  # refused before anything was written


@pytest.mark.parametrize("command", [pretrain, finetune, evaluate, study])
def test_out_that_is_a_file_or_unwritable_is_one_line(world, tmp_path, capsys, command):
    assert main(command(world, world["file"])) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"transfergen: error: {world['file']}: --out is an existing file, not a folder"]
    assert world["file"].read_text() == "not a folder\n"
    # a folder below a file can never be created: the error comes before any work
    assert main(command(world, world["file"] / "run")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write the --out folder: Not a directory" in err[0], err
