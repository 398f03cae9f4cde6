"""Large pretrained starting points: HF models whose block list is not ours (GPT-2, Qwen2, OPT),
loaded in their own dtype, with every strategy, LoRA and activation checkpointing.

The models are tiny configs built and saved here, with a tokenizer trained here: nothing is
downloaded."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from transfergen.config import RunConfig, build_config
from transfergen.finetune import run_finetune
from transfergen.hub import build_like, load_model, save_model, weights_dtype
from transfergen.model import HFCausalLM, TransferGenLM, build_model
from transfergen.parallel import checkpoint_blocks
from transfergen.shape import ModelShape
from transfergen.strategies import model_layout
from transfergen.tokenizer import TextTokenizer

from conftest import OBJECTS, SUBJECTS, VERBS
from test_parallel import _saved_bytes


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> TextTokenizer:
    rng = random.Random(0)
    docs = [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}." for _ in range(300)]
    return TextTokenizer.train(docs, 300)


def _hf_model(kind: str, tok: TextTokenizer) -> torch.nn.Module:
    """A tiny randomly initialised GPT-2 (transformer.h, Conv1D, tied head) or Qwen2-style model
    (model.layers, q/k/v biases, grouped K/V, untied head) or OPT (model.decoder.layers)."""
    import transformers as tf

    ids = {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id, "pad_token_id": tok.pad_id}
    torch.manual_seed(0)
    if kind == "gpt2":
        cfg = tf.GPT2Config(vocab_size=tok.vocab_size, n_positions=64, n_embd=32, n_layer=3, n_head=2, **ids)
        return tf.GPT2LMHeadModel(cfg)
    if kind == "qwen2":
        cfg = tf.Qwen2Config(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                             tie_word_embeddings=False, **ids)
        return tf.Qwen2ForCausalLM(cfg)
    cfg = tf.OPTConfig(vocab_size=tok.vocab_size, hidden_size=32, ffn_dim=64, num_hidden_layers=3,
                       num_attention_heads=2, max_position_embeddings=64, word_embed_proj_dim=32, **ids)
    return tf.OPTForCausalLM(cfg)


@pytest.fixture(scope="module")
def folders(tok, tmp_path_factory) -> dict[str, Path]:
    """bf16 model folders: GPT-2, Qwen2 and our own Llama, each with the tokenizer."""
    root, out = tmp_path_factory.mktemp("hf_models"), {}
    for kind in ("gpt2", "qwen2"):
        out[kind] = root / kind
        _hf_model(kind, tok).to(torch.bfloat16).save_pretrained(str(out[kind]))
    shape = ModelShape(vocab_size=tok.vocab_size, n_layer=2, d_model=32, n_head=4, n_kv_head=2, d_ff=64,
                       max_seq_len=64, bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)
    out["ours"] = root / "ours"
    save_model(build_model(shape, seed=0).to(torch.bfloat16), out["ours"])
    for folder in out.values():
        tok.save(folder)
    return out


@pytest.fixture(scope="module")
def task_file(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("task")
    rng = random.Random(1)
    with open(root / "pairs.jsonl", "w") as fh:
        for _ in range(120):
            fh.write(json.dumps({"source": rng.choice(SUBJECTS), "target": f"{rng.choice(VERBS)}."}) + "\n")
    (root / "task.yaml").write_text(f"name: toy\nreader: jsonl\npath: {root / 'pairs.jsonl'}\nval_size: 20\n"
                                    "test_size: 20\nmax_source_tokens: 12\nmax_target_tokens: 8\n")
    return root / "task.yaml"


@pytest.mark.parametrize("kind", ["gpt2", "qwen2", "ours"])
def test_init_loads_in_the_checkpoints_dtype_with_no_random_init(kind, folders, monkeypatch):
    inits = []
    real_normal = torch.nn.init.normal_
    def normal_(*args, **kwargs):
        inits.append((args[0] if args else kwargs["tensor"]).device.type)
        return real_normal(*args, **kwargs)
    monkeypatch.setattr(torch.nn.init, "normal_", normal_)
    model = load_model(folders[kind], dtype=None)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert "cpu" not in inits  # no weight was drawn at random only to be overwritten
    saved = {k: v for k, v in load_file(str(next(folders[kind].glob("*.safetensors")))).items()}
    state = model.state_dict()
    prefix = "hf." if isinstance(model, HFCausalLM) else ""
    for k, v in saved.items():
        assert torch.equal(state[prefix + k], v), k  # bit for bit what the folder holds
    assert {p.dtype for p in load_model(folders[kind]).parameters()} == {torch.float32}  # evaluate: fp32
    # The scratch baseline of a bf16 model (`model.like`) is bf16 too: the arms differ in weights alone.
    assert weights_dtype(folders[kind]) == torch.bfloat16
    assert {p.dtype for p in build_like(folders[kind], seed=0).parameters()} == {torch.bfloat16}
    if kind == "ours":
        assert isinstance(model, TransferGenLM) and model.lm_head.weight is model.model.embed_tokens.weight
        assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).float()).all()


@pytest.mark.parametrize("kind, stack", [("gpt2", "hf.transformer.h"), ("qwen2", "hf.model.layers"),
                                         ("opt", "hf.model.decoder.layers")])
def test_block_lists_of_hf_models(kind, stack, tok):
    """GPT-2 and Qwen2 by name; OPT, whose list has no known name, by its blocks' class."""
    lay = model_layout(HFCausalLM(_hf_model(kind, tok)))
    assert lay.blocks == [f"{stack}.{i}" for i in range(3)]
    assert all(n.startswith(f"{stack}.{i}.") for i, names in enumerate(lay.block_params) for n in names)
    assert lay.tied == (kind != "qwen2") and lay.embed and lay.head


@pytest.mark.parametrize("kind", ["gpt2", "qwen2"])
def test_activation_checkpointing_on_hf_models(kind, tok):
    model = HFCausalLM(_hf_model(kind, tok)).train()
    ids = torch.randint(0, tok.vocab_size, (2, 20), generator=torch.Generator().manual_seed(0))
    plain_bytes, plain = _saved_bytes(model, ids)
    assert checkpoint_blocks(model) == 3
    ckpt_bytes, grads = _saved_bytes(model, ids)
    for n, g in plain.items():
        torch.testing.assert_close(grads[n], g, rtol=1e-5, atol=1e-6)
    assert ckpt_bytes < 0.6 * plain_bytes, (ckpt_bytes, plain_bytes)


STRATEGIES = {  # name -> its options
    "freeze": {"freeze_bottom": 2},
    "reinit+gradual": {"reinit_top": 1, "unfreeze_every": 2},
    "discriminative+l2sp": {"lr_decay": 0.5},
    "lora": {"lora_rank": 2},
}
LORA_TARGETS = {"gpt2": ["c_attn"], "qwen2": ["q_proj", "v_proj"]}


@pytest.mark.parametrize("strategy", list(STRATEGIES))
@pytest.mark.parametrize("kind, dtype", [("gpt2", "bf16"), ("qwen2", "fp32")])
def test_strategies_fine_tune_hf_models(kind, dtype, strategy, folders, task_file, tmp_path):
    """--init of a bf16 GPT-2 / Qwen2 folder, activation checkpointing on: each strategy trains
    what it says and saves a folder that loads; in bf16 the weights stay bf16, in fp32 they train fp32."""
    opts = dict(STRATEGIES[strategy])
    if strategy == "lora":
        opts["lora_targets"] = LORA_TARGETS[kind]
    out = tmp_path / "run"
    cfg = build_config(RunConfig, [], {
        "out": str(out), "init": str(folders[kind]), "task": _task(task_file),
        "strategy": {"name": strategy, **opts},
        "train": {"max_steps": 4, "batch_size": 8, "lr": 1e-2, "warmup_steps": 0, "eval_every": 4,
                  "save_every": 4, "eval_batches": 1, "log_every": 1, "threads": 1, "dtype": dtype,
                  "activation_checkpointing": True}})
    run_finetune(cfg)
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(r["loss"] == r["loss"] for r in recs if "loss" in r) and recs[-1]["val_loss"] < 50
    assert weights_dtype(out) == {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    before, after = load_model(folders[kind]).state_dict(), load_model(out).state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    blocks = model_layout(load_model(out)).blocks
    moved = [any(k.startswith(b + ".") for k in changed) for b in blocks]
    if strategy == "freeze":
        assert moved == [False, False, True]
    elif strategy == "reinit+gradual":  # top block new and training; from step 2 the one below too
        assert moved == [False, True, True]
    else:
        assert all(moved), moved
    if strategy == "lora":  # merged into plain weights; the adapter rebuilds them from the base
        assert (out / "adapter" / "adapter_model.safetensors").is_file()
        assert not any("lora" in k for k in after)


def _task(task_file: Path) -> dict:
    from transfergen.config import to_dict
    from transfergen.data.tasks import load_task_file

    return to_dict(load_task_file(task_file))
