"""TransferGenLM matches transformers' Llama exactly, saves/loads in HF format, and
wraps other HF causal LMs behind the same interface."""

from __future__ import annotations

import json

import pytest
import torch

from transfergen.config import ModelConfig
from transfergen.errors import UserError
from transfergen.hub import load_model, save_model
from transfergen.model import PRESETS, HFCausalLM, ModelShape, TransferGenLM, build_model, resolve_shape

V = 97


def tiny_shape(n_kv_head: int = 2, **kw) -> ModelShape:
    cfg = ModelConfig(preset="tiny", n_layer=2, d_model=64, n_head=4, n_kv_head=n_kv_head, d_ff=96,
                      max_seq_len=32, rope_theta=500.0, **kw)
    return resolve_shape(cfg, vocab_size=V, bos_id=1, eos_id=2, pad_id=0)


def ids(B: int = 2, T: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("n_kv_head", [2, 4])
def test_logits_match_hf_llama(tmp_path, n_kv_head):
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    model = build_model(tiny_shape(n_kv_head), seed=0).eval()
    save_model(model, tmp_path)
    hf, info = AutoModelForCausalLM.from_pretrained(tmp_path, local_files_only=True, output_loading_info=True)
    assert isinstance(hf, LlamaForCausalLM)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert hf.config.num_key_value_heads == n_kv_head and hf.config.tie_word_embeddings
    x = ids()
    with torch.no_grad():
        ours, theirs = model(x), hf(input_ids=x).logits
    assert ours.shape == (2, 16, V) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    # same parameter names, one to one (HF lists the tied head too)
    assert set(model.state_dict()) == set(hf.state_dict())
    assert not any("rope" in k for k in model.state_dict())


def test_save_load_roundtrip(tmp_path):
    model = build_model(tiny_shape(), seed=1).eval()
    save_model(model, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {"config.json", "model.safetensors", "generation_config.json"}
    gen = json.loads((tmp_path / "generation_config.json").read_text())
    assert (gen["bos_token_id"], gen["eos_token_id"], gen["pad_token_id"]) == (1, 2, 0)
    loaded = load_model(tmp_path)
    assert isinstance(loaded, TransferGenLM) and loaded.shape == model.shape
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    x = ids(seed=3)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    bf = load_model(tmp_path, dtype=torch.bfloat16)
    assert bf.lm_head.weight.dtype == torch.bfloat16
    assert bf.lm_head.weight.data_ptr() == bf.model.embed_tokens.weight.data_ptr()


def test_sharded_checkpoint(tmp_path):
    from safetensors.torch import load_file, save_file

    model = build_model(tiny_shape(), seed=2).eval()
    save_model(model, tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    (tmp_path / "model.safetensors").unlink()
    names = sorted(state)
    halves = {"a.safetensors": names[: len(names) // 2], "b.safetensors": names[len(names) // 2:]}
    for fname, keys in halves.items():
        save_file({k: state[k] for k in keys}, tmp_path / fname, metadata={"format": "pt"})
    weight_map = {k: f for f, keys in halves.items() for k in keys}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    loaded = load_model(tmp_path)
    x = ids()
    with torch.no_grad():
        assert isinstance(loaded, TransferGenLM) and torch.equal(model(x), loaded(x))


def test_gpt2_loads_as_hf_wrapper(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=50, n_positions=64)).eval()
    gpt2.save_pretrained(tmp_path / "orig")
    loaded = load_model(tmp_path / "orig")
    assert isinstance(loaded, HFCausalLM) and loaded.max_seq_len == 64 and loaded.vocab_size == 50
    x = torch.randint(0, 50, (2, 10))
    with torch.no_grad():
        ref = gpt2(input_ids=x).logits
        torch.testing.assert_close(loaded(x), ref, atol=1e-6, rtol=0)
    assert loaded.num_params() == gpt2.num_parameters()
    assert loaded.flops_per_token(64) >= 6 * loaded.num_params(exclude_embeddings=True)
    save_model(loaded, tmp_path / "again")
    assert (tmp_path / "again" / "generation_config.json").is_file()
    again = load_model(tmp_path / "again")
    with torch.no_grad():
        torch.testing.assert_close(again(x), ref, atol=1e-6, rtol=0)


def test_untied_llama_falls_back_to_hf(tmp_path):
    from transformers import LlamaForCausalLM

    from transfergen.hub import hf_config

    cfg = hf_config(tiny_shape())
    cfg.tie_word_embeddings = False
    hf = LlamaForCausalLM(cfg).eval()
    hf.save_pretrained(tmp_path)
    loaded = load_model(tmp_path)
    assert isinstance(loaded, HFCausalLM)
    x = ids()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), hf(input_ids=x).logits, atol=1e-6, rtol=0)


@pytest.mark.parametrize("preset,lo,hi", [("tiny", 0.8e6, 1.3e6), ("small", 4e6, 6e6), ("base", 20e6, 30e6)])
def test_preset_sizes(preset, lo, hi):
    shape = resolve_shape(ModelConfig(preset=preset), vocab_size=8192, bos_id=1, eos_id=2, pad_id=0)
    assert shape.max_seq_len == PRESETS[preset]["max_seq_len"] and shape.n_kv_head == shape.n_head
    with torch.device("meta"):  # counts only; no memory, no init cost
        model = TransferGenLM(shape)
    n = model.num_params(exclude_embeddings=True)
    assert lo <= n <= hi
    assert model.num_params() == n + 8192 * shape.d_model  # tied head counted once
    f = model.flops_per_token(256)
    assert 6 * (n + 8192 * shape.d_model) < f < 6 * (n + 8192 * shape.d_model) * 1.5


def test_causal():
    model = build_model(tiny_shape(), seed=0).eval()
    x = ids(B=1, T=20)
    y = x.clone()
    y[0, 12] = (x[0, 12] + 1) % V
    with torch.no_grad():
        a, b = model(x), model(y)
    torch.testing.assert_close(a[:, :12], b[:, :12], atol=0, rtol=0)
    assert not torch.allclose(a[:, 12:], b[:, 12:])


def test_seeded_init_and_residual_scaling():
    a, b = build_model(tiny_shape(), seed=5), build_model(tiny_shape(), seed=5)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    std = a.model.layers[0].self_attn.q_proj.weight.std().item()
    resid = a.model.layers[0].mlp.down_proj.weight.std().item()
    assert abs(std - 0.02) < 0.003 and abs(resid - 0.02 / 2) < 0.002  # 1/sqrt(2*2 layers)


def test_errors(tmp_path):
    with pytest.raises(UserError, match=r"model\.preset"):
        resolve_shape(ModelConfig(preset="huge"), 100, 1, 2, 0)
    with pytest.raises(UserError, match=r"model\.n_head"):
        resolve_shape(ModelConfig(d_model=100, n_head=3), 100, 1, 2, 0)
    with pytest.raises(UserError, match=r"model\.n_kv_head"):
        resolve_shape(ModelConfig(n_head=4, n_kv_head=3), 100, 1, 2, 0)
    with pytest.raises(UserError, match="not found"):
        load_model(tmp_path / "nope")
    with pytest.raises(UserError, match=r"config\.json"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(UserError, match=r"config\.json"):
        load_model(tmp_path)


def test_bad_weights(tmp_path):
    from safetensors.torch import load_file, save_file

    save_model(build_model(tiny_shape(), seed=0), tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    del state["model.layers.1.mlp.up_proj.weight"]
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(UserError, match=r"model\.layers\.1\.mlp\.up_proj\.weight"):
        load_model(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(UserError, match="weights"):
        load_model(tmp_path)
