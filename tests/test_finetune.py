"""Transfer to a task on the one loop: transfer vs scratch, LoRA export + resume, vocab growth."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

import transfergen.train as train_mod
from transfergen.cli import main
from transfergen.config import RunConfig, build_config, merge, to_dict
from transfergen.data.seq2seq import TaskBatches
from transfergen.data.tasks import load_task, load_task_file
from transfergen.finetune import run_finetune, subset
from transfergen.model import TransferGenLM
from transfergen.hub import load_model
from transfergen.session import build_initial_model, resolve_tokenizer
from transfergen.distributed import DistInfo
from transfergen.tokenizer import TextTokenizer

from conftest import OBJECTS, SUBJECTS, VERBS

FT = {"train": {"max_steps": 12, "batch_size": 8, "lr": 3e-3, "warmup_steps": 2, "eval_every": 6,
                "save_every": 6, "log_every": 1, "eval_batches": 2, "threads": 1}}


@pytest.fixture(scope="module")
def pretrained(tiny_pretrained) -> Path:
    """The session's tiny model pretrained on the template corpus (40 steps)."""
    return tiny_pretrained


@pytest.fixture(scope="module")
def task_file(tmp_path_factory) -> Path:
    """subject -> 'verb object' completion: learnable, and close to the pretraining text."""
    root = tmp_path_factory.mktemp("task")
    rng = random.Random(1)
    with open(root / "pairs.jsonl", "w") as fh:
        for _ in range(300):
            s, v, o = rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS)
            fh.write(json.dumps({"source": s.capitalize(), "target": f"{v} {o}."}) + "\n")
    (root / "task.yaml").write_text(f"name: toy\nreader: jsonl\npath: {root / 'pairs.jsonl'}\n"
                                    "prompt: '{source}'\nval_size: 40\ntest_size: 40\n"
                                    "max_source_tokens: 16\nmax_target_tokens: 16\n")
    return root / "task.yaml"


def ft_config(out: Path, init: str, task: Path, **sections) -> RunConfig:
    data = merge(FT, {"out": str(out), "init": init, "task": to_dict(load_task_file(task))})
    return build_config(RunConfig, [], merge(data, sections))


def val_losses(run: Path) -> dict[int, float]:
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["val_loss"] for r in recs if "val_loss" in r}


def test_scratch_and_transfer_differ_only_in_initial_weights(pretrained, task_file, tmp_path):
    transfer = ft_config(tmp_path / "t", str(pretrained), task_file)
    scratch = ft_config(tmp_path / "s", "scratch", task_file, model={"like": str(pretrained)})
    tok_t = resolve_tokenizer(transfer, tmp_path / "t", DistInfo())
    tok_s = resolve_tokenizer(scratch, tmp_path / "s", DistInfo())
    assert tok_t.fingerprint() == tok_s.fingerprint()
    m_t, m_s = build_initial_model(transfer, tok_t), build_initial_model(scratch, tok_s)
    assert isinstance(m_s, TransferGenLM) and m_s.shape == m_t.shape
    st, ss = m_t.state_dict(), m_s.state_dict()
    assert st.keys() == ss.keys() and all(st[k].shape == ss[k].shape for k in st)
    assert not torch.equal(st["model.layers.0.mlp.up_proj.weight"], ss["model.layers.0.mlp.up_proj.weight"])
    data = load_task(transfer.task)
    b_t = TaskBatches(data.train, tok_t, transfer.task, 8, transfer.train.seed)
    b_s = TaskBatches(data.train, tok_s, scratch.task, 8, scratch.train.seed)
    for _ in range(3):  # identical data order
        assert all(torch.equal(a, b) for a, b in zip(b_t.next_batch(), b_s.next_batch(), strict=True))


def test_finetune_cli_transfer_beats_scratch_on_val_loss(pretrained, task_file, tmp_path):
    flags = ["--task", str(task_file), "--train.max_steps=12", "--train.eval_every=6", "--train.batch_size=8",
             "--train.lr=3e-3", "--train.warmup_steps=2", "--train.eval_batches=2", "--train.threads=1"]
    assert main(["finetune", "--init", str(pretrained), "--strategy", "full", "--out", str(tmp_path / "t"),
                 *flags]) == 0
    assert main(["finetune", "--init", "scratch", "--model.like", str(pretrained), "--strategy", "full",
                 "--out", str(tmp_path / "s"), *flags]) == 0
    vt, vs = val_losses(tmp_path / "t"), val_losses(tmp_path / "s")
    assert vt[12] < vs[12] - 0.3, (vt, vs)  # the pretrained model already knows the templates
    setup = json.loads((tmp_path / "t" / "metrics.jsonl").read_text().splitlines()[0])
    assert setup["strategy"] == "full" and setup["train_examples"] == 220 and setup["frozen_params"] == 0


def test_lora_saves_plain_weights_and_resumes_exactly(pretrained, task_file, tmp_path, monkeypatch):
    lora = {"strategy": {"name": "lora", "lora_rank": 4, "lora_alpha": 8.0, "lora_lr": 1e-2}}
    full = tmp_path / "full"
    run_finetune(ft_config(full, str(pretrained), task_file, **lora))
    model = load_model(full)  # merged: loads without PEFT into our own class
    assert isinstance(model, TransferGenLM)
    assert not any("lora" in k for k in model.state_dict())
    base = load_model(pretrained)
    assert not torch.equal(model.state_dict()["model.layers.0.self_attn.q_proj.weight"],
                           base.state_dict()["model.layers.0.self_attn.q_proj.weight"])
    assert torch.equal(model.state_dict()["model.layers.0.mlp.up_proj.weight"],
                       base.state_dict()["model.layers.0.mlp.up_proj.weight"])  # not a LoRA target

    killed = tmp_path / "killed"
    real_step = train_mod._train_step

    def dying_step(run, *args, **kwargs):
        if run.state["step"] == 8:
            raise KeyboardInterrupt("simulated kill")
        return real_step(run, *args, **kwargs)

    monkeypatch.setattr(train_mod, "_train_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        run_finetune(ft_config(killed, str(pretrained), task_file, **lora))
    monkeypatch.setattr(train_mod, "_train_step", real_step)
    run_finetune(ft_config(killed, str(pretrained), task_file, resume=True, **lora))
    assert val_losses(killed) == val_losses(full)
    torch.testing.assert_close(load_model(killed).state_dict(), model.state_dict(), rtol=0, atol=0)


def test_lora_run_writes_a_peft_adapter_with_the_merged_logits(pretrained, task_file, tmp_path):
    """PeftModel.from_pretrained(base, FT/adapter) is the merged model FT/, logit for logit."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    lora = {"strategy": {"name": "lora", "lora_rank": 4, "lora_alpha": 8.0, "lora_lr": 1e-2,
                         "lora_targets": ["q_proj", "v_proj", "down_proj"]}}
    run = tmp_path / "lora"
    run_finetune(ft_config(run, str(pretrained), task_file, **lora))
    adapter = run / "adapter"
    assert sorted(p.name for p in adapter.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == \
        str(pretrained.resolve())
    x = torch.randint(4, 300, (3, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(run)(input_ids=x).logits
        peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(pretrained), adapter)(input_ids=x).logits
        base = AutoModelForCausalLM.from_pretrained(pretrained)(input_ids=x).logits
    assert (merged - base).abs().max() > 1e-2  # the adapters changed the model
    torch.testing.assert_close(peft, merged, rtol=1e-5, atol=1e-5)
    assert (run / "checkpoints" / "step-0000012" / "adapter" / "adapter_model.safetensors").is_file()


def test_lora_writes_no_adapter_that_would_not_rebuild_the_model(pretrained, task_file, tmp_path):
    short = {"train": {"max_steps": 2, "save_every": 2, "eval_every": 2}}
    run_finetune(ft_config(tmp_path / "s", "scratch", task_file, strategy={"name": "lora"},
                           model={"like": str(pretrained)}, **short))
    assert not (tmp_path / "s" / "adapter").exists()
    setup = json.loads((tmp_path / "s" / "metrics.jsonl").read_text().splitlines()[0])
    assert any("no adapter/ (the initial weights are no model folder's" in line for line in setup["strategy_log"])


def test_vocab_extension_grows_model_and_tokenizer(pretrained, task_file, tmp_path):
    zh = tmp_path / "zh.txt"
    rng = random.Random(0)
    who, act = ["国王", "士兵", "王后", "将军", "诗人"], ["说起", "保卫", "想念", "忘记"]
    what = ["王冠", "城堡", "音乐", "战场"]
    zh.write_text("\n".join(f"{rng.choice(who)}{rng.choice(act)}{rng.choice(what)}。" for _ in range(200)),
                  encoding="utf-8")
    out = tmp_path / "ext"
    run_finetune(ft_config(out, str(pretrained), task_file, vocab={"extend_from": [str(zh)], "add": 12},
                           train={"max_steps": 4}))
    report = json.loads((out / "vocab_report.json").read_text())
    assert report["n_added"] == 12
    assert report["after"]["tokens_per_char"] < report["before"]["tokens_per_char"]
    old_vocab = TextTokenizer.load(pretrained).vocab_size
    model, tok = load_model(out), TextTokenizer.load(out)
    assert tok.vocab_size == old_vocab + 12 and model.shape.vocab_size == old_vocab + 12
    assert tok.decode(tok.encode("国王说起王冠。")) == "国王说起王冠。"


def test_max_examples_is_a_fixed_seeded_subset(task_file):
    data = load_task(load_task_file(task_file))
    a, b = subset(data.train, 50, seed=0), subset(data.train, 50, seed=0)
    assert a == b and len(a) == 50 and subset(data.train, 50, seed=1) != a
    assert subset(data.train, 10_000, seed=0) == data.train


def test_generation_eval_during_training_and_evaluate_cli(pretrained, task_file, tmp_path, capsys):
    import sacrebleu

    out = tmp_path / "ft"
    cfg = ft_config(out, str(pretrained), task_file, eval={"generate": True, "examples": 16, "max_new_tokens": 8},
                    train={"best_metric": "bleu"})
    cfg.task.metrics = ["bleu", "rouge"]
    run_finetune(cfg)
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in recs if "val_loss" in r]
    assert [r["step"] for r in evals] == [6, 12] and all("bleu" in r and "rouge" in r for r in evals)
    assert (out / "best" / "model.safetensors").is_file()

    ev = tmp_path / "eval"
    assert main(["evaluate", "--model", str(out), "--task", str(task_file), "--split", "test", "--out", str(ev),
                 "--eval.max_new_tokens=8", "--task.metrics=[bleu,chrf]"]) == 0
    rows = [json.loads(x) for x in (ev / "predictions.jsonl").read_text().splitlines()]
    scores = json.loads((ev / "scores.json").read_text())
    assert len(rows) == 40 == scores["n"] and set(rows[0]) == {"source", "hypothesis", "references"}
    hyps = [r["hypothesis"] for r in rows]
    ref_bleu = sacrebleu.corpus_bleu(hyps, [[r["references"][0] for r in rows]]).score
    assert scores["scores"]["bleu"]["score"] == pytest.approx(ref_bleu, abs=1e-9)
    assert "nrefs:1" in scores["scores"]["bleu"]["signature"]
    assert 1.0 < scores["perplexity"] < 320
    assert "chrF" in capsys.readouterr().out


def test_frozen_weights_cost_no_weight_gradient_flops(pretrained, task_file, tmp_path):
    """FLOPs per token: 6 per trained weight, 4 per frozen one (forward + input gradient only)."""
    flops = {}
    for name, strategy in (("full", {"name": "full"}), ("freeze", {"name": "freeze", "freeze_bottom": 1})):
        run = tmp_path / name
        run_finetune(ft_config(run, str(pretrained), task_file, strategy=strategy,
                               train={"max_steps": 2, "eval_every": 2, "save_every": 2}))
        recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        flops[name] = max(r.get("flops", 0.0) for r in recs)
    model = load_model(pretrained)
    block = sum(p.numel() for p in model.model.layers[0].parameters() if p.dim() >= 2)
    tokens = max(r.get("tokens", 0) for r in (json.loads(x) for x in
                                              (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()))
    assert flops["full"] - flops["freeze"] == pytest.approx(2.0 * block * tokens)
