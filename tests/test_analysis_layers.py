"""Layer analysis: CKA's defining properties, weight change by hand, hidden states that
reproduce the logits, attention maps that reproduce the layer's attention output, and the
same numbers on a transformers copy of the model."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn as nn

from transfergen.analysis.layers import (attention_map, hidden_states, layer_cka, layer_report,
                                         linear_cka, weight_change)
from transfergen.config import ModelConfig
from transfergen.hub import save_model
from transfergen.model import HFCausalLM, build_model, resolve_shape
from transfergen.tokenizer import TextTokenizer

V, BOS, EOS, PAD = 97, 1, 2, 0
N_LAYER = 2


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny ops run best on 1 thread


def tiny_model(n_kv_head: int = 2, vocab: int = V, seed: int = 0, init_std: float = 0.02):
    cfg = ModelConfig(preset="tiny", n_layer=N_LAYER, d_model=64, n_head=4, n_kv_head=n_kv_head, d_ff=96,
                      max_seq_len=64, init_std=init_std)
    return build_model(resolve_shape(cfg, vocab_size=vocab, bos_id=BOS, eos_id=EOS, pad_id=PAD), seed=seed).eval()


def random_ids(shape=(3, 10), seed: int = 0, vocab: int = V) -> torch.Tensor:
    return torch.randint(3, vocab, shape, generator=torch.Generator().manual_seed(seed))


def add_noise(model: nn.Module, prefix: str, scale: float = 0.01, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(prefix):
                p.add_(scale * torch.randn(p.shape, generator=g))


# ---------------------------------------------------------------------------
# CKA


def test_linear_cka_of_itself_is_one():
    x = torch.randn(200, 16, generator=torch.Generator().manual_seed(0))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-9)


def test_linear_cka_invariant_to_rotation_and_scale():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 16, generator=g) + 5.0  # a mean offset: centring must remove it
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g, dtype=torch.float64))
    y = 7.5 * (x.double() @ q) - 3.0
    assert linear_cka(x, y) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(y, x) == pytest.approx(1.0, abs=1e-9)


def test_linear_cka_of_independent_noise_is_small():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(4000, 8, generator=g), torch.randn(4000, 12, generator=g)
    assert 0.0 <= linear_cka(x, y) < 0.2


def test_linear_cka_rejects_mismatched_rows():
    with pytest.raises(ValueError):
        linear_cka(torch.randn(5, 3), torch.randn(6, 3))


def test_layer_cka_of_a_model_with_itself_is_one():
    model = tiny_model()
    batches = [random_ids((3, 10), seed=0), random_ids((2, 7), seed=1)]
    masks = [torch.ones(3, 10, dtype=torch.long), torch.tensor([[1] * 7, [1] * 4 + [0] * 3])]
    rows = layer_cka(model, model, batches, masks)
    assert [r["name"] for r in rows] == ["embed"] + [f"layer {i}" for i in range(N_LAYER)]
    for r in rows:
        assert r["cka"] == pytest.approx(1.0, abs=1e-9)


def test_layer_cka_streams_like_one_concatenated_matrix():
    """Sums over batches with pad positions dropped equal CKA of the stacked real rows."""
    a, b = tiny_model(seed=0), tiny_model(seed=5)
    batches = [random_ids((2, 9), seed=2), random_ids((3, 6), seed=3)]
    masks = [torch.tensor([[1] * 9, [1] * 5 + [0] * 4]), torch.tensor([[1] * 6, [1] * 2 + [0] * 4, [1] * 6])]
    rows = layer_cka(a, b, batches, masks)
    for i, row in enumerate(rows):
        xs = torch.cat([hidden_states(a, ids)[i][m.bool()] for ids, m in zip(batches, masks, strict=True)])
        ys = torch.cat([hidden_states(b, ids)[i][m.bool()] for ids, m in zip(batches, masks, strict=True)])
        assert xs.shape[0] == 9 + 5 + 6 + 2 + 6
        assert row["cka"] == pytest.approx(linear_cka(xs, ys), abs=1e-9)
        assert 0.0 <= row["cka"] < 1.0


# ---------------------------------------------------------------------------
# weight change


def test_weight_change_of_a_model_with_itself_is_zero():
    model = tiny_model()
    rows = weight_change(model, model)
    assert [r["name"] for r in rows] == ["embed", "layer 0", "layer 1", "final norm"]
    assert all(r["relative_change"] == 0.0 for r in rows)
    assert sum(r["params"] for r in rows) == model.num_params()  # tied head counted once


def test_weight_change_of_one_noisy_layer_matches_by_hand():
    pre = tiny_model()
    ft = copy.deepcopy(pre)
    add_noise(ft, "model.layers.1.")
    rows = {r["name"]: r for r in weight_change(pre, ft)}
    assert rows["embed"]["relative_change"] == 0.0 and rows["layer 0"]["relative_change"] == 0.0
    assert rows["final norm"]["relative_change"] == 0.0
    pre_p, ft_p = pre.model.layers[1].parameters(), ft.model.layers[1].parameters()
    pairs = [(a.detach().double(), b.detach().double()) for a, b in zip(pre_p, ft_p, strict=True)]
    diff = sum(float((b - a).pow(2).sum()) for a, b in pairs) ** 0.5
    base = sum(float(a.pow(2).sum()) for a, _ in pairs) ** 0.5
    assert rows["layer 1"]["relative_change"] > 0
    assert rows["layer 1"]["relative_change"] == pytest.approx(diff / base, rel=1e-9)
    assert rows["layer 1"]["params"] == sum(a.numel() for a, _ in pairs)


def test_weight_change_with_a_grown_vocabulary_compares_the_old_rows():
    pre = tiny_model()
    ft = copy.deepcopy(pre)
    grown = nn.Parameter(torch.cat([ft.model.embed_tokens.weight.detach(), torch.randn(10, 64)]))
    ft.model.embed_tokens.weight = grown
    ft.lm_head.weight = grown  # keep the tie, as a vocabulary extension does
    embed = weight_change(pre, ft)[0]
    assert embed["name"] == "embed" and embed["relative_change"] == 0.0
    assert embed["params"] == V * 64
    assert "grew from 97 to 107" in embed["note"]


def test_weight_change_without_common_names_names_the_model():
    with pytest.raises(ValueError, match="Linear"):
        weight_change(tiny_model(), nn.Linear(4, 4))


# ---------------------------------------------------------------------------
# hidden states and attention


def test_hidden_states_reproduce_the_logits():
    model = tiny_model(init_std=0.3).train()  # training flag must survive the call
    ids = random_ids((2, 12))
    states = hidden_states(model, ids)
    assert model.training
    assert len(states) == N_LAYER + 1 and all(s.shape == (2, 12, 64) for s in states)
    with torch.no_grad():
        logits = model.lm_head(model.model.norm(states[-1]))
        torch.testing.assert_close(logits, model.eval()(ids), atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def hf_copy(tmp_path_factory):
    """(ours, transformers' LlamaForCausalLM) with identical saved weights."""
    from transformers import LlamaForCausalLM

    model, folder = tiny_model(init_std=0.3), tmp_path_factory.mktemp("tiny")
    save_model(model, folder)
    return model, LlamaForCausalLM.from_pretrained(folder, local_files_only=True).eval()


def test_transformers_copy_has_zero_weight_change(hf_copy):
    ours, hf = hf_copy
    for other in (hf, HFCausalLM(hf)):
        rows = weight_change(ours, other)
        assert [r["name"] for r in rows] == ["embed", "layer 0", "layer 1", "final norm"]
        assert all(r["relative_change"] == 0.0 for r in rows)
        assert weight_change(other, ours) == rows


def test_transformers_hidden_states_line_up_with_ours(hf_copy):
    ours, hf = hf_copy
    ids = random_ids((2, 8))
    mine = hidden_states(ours, ids)
    for other in (hf, HFCausalLM(hf)):
        theirs = hidden_states(other, ids)
        assert len(theirs) == len(mine)
        for a, b in zip(mine, theirs, strict=True):  # the last one too: both before the final norm
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert all(r["cka"] == pytest.approx(1.0, abs=1e-6) for r in layer_cka(ours, hf, [ids]))


@pytest.mark.parametrize("n_kv_head", [2, 4])
@pytest.mark.parametrize("layer", [0, -1])
def test_attention_map_reproduces_the_attention_output(n_kv_head, layer):
    """attn @ v for each head equals what the layer actually feeds into o_proj."""
    model = tiny_model(n_kv_head=n_kv_head, init_std=0.3)
    ids, T, hd = random_ids((1, 11)), 11, 16
    block = model.model.layers[layer]
    seen = []
    handle = block.self_attn.o_proj.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    with torch.no_grad():
        model(ids)
    handle.remove()
    x_in = hidden_states(model, ids)[layer - 1 if layer < 0 else layer]  # the layer's input
    with torch.no_grad():
        v = block.self_attn.v_proj(block.input_layernorm(x_in)).view(1, T, n_kv_head, hd)[0]  # (T,KV,hd)
    for head in range(4):
        attn = attention_map(model, ids, layer=layer, head=head)
        assert attn.shape == (T, T)
        torch.testing.assert_close(attn.sum(-1), torch.ones(T), atol=1e-6, rtol=0)
        assert torch.all(attn.triu(1) == 0)
        y = attn @ v[:, head // (4 // n_kv_head)]  # (T,hd)
        torch.testing.assert_close(y, seen[0][0, :, head * hd:(head + 1) * hd], atol=1e-5, rtol=0)


def test_attention_map_rejects_bad_arguments(hf_copy):
    model, hf = hf_copy
    with pytest.raises(ValueError):
        attention_map(model, random_ids((2, 5)))
    with pytest.raises(ValueError):
        attention_map(model, random_ids((1, 5)), layer=N_LAYER)
    with pytest.raises(TypeError):
        attention_map(hf, random_ids((1, 5)))


def test_plot_attention_writes_a_png(tmp_path):
    from transfergen.plots import attention_maps

    tokens = ["<bos>", "the", "cat", "我们", "sat"]
    attn = attention_map(tiny_model(), torch.tensor([[1, 5, 6, 7, 8]]))
    out = tmp_path / "plots" / "attn.png"
    attention_maps({"pretrained": attn.tolist(), "full": attn.tolist()}, tokens, out, title="layer -1, head 0")
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 1000


# ---------------------------------------------------------------------------
# the report on saved folders


TEXTS = ["The cat reads a book on day 3.", "A small dog finds the river.", "我们喜欢学习中文。",
         "My teacher remembers the morning news, and every student watches a red apple " * 3] * 3


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    docs = TEXTS * 20 + ["the old farmer carries some bread", "our neighbour writes the letters"] * 20
    return TextTokenizer.train(iter(docs), vocab_size=320, min_frequency=2)


def saved(model: nn.Module, tok: TextTokenizer, folder) -> str:
    save_model(model, folder)
    tok.save(folder)
    return str(folder)


def test_layer_report_on_saved_folders(tmp_path, tokenizer):
    pre = tiny_model(vocab=tokenizer.vocab_size, init_std=0.3)
    ft = copy.deepcopy(pre)
    add_noise(ft, "model.layers.1.", scale=0.3)
    report = layer_report(saved(pre, tokenizer, tmp_path / "pre"), saved(ft, tokenizer, tmp_path / "ft"),
                          TEXTS, max_tokens=20)
    json.dumps(report)
    names = ["embed"] + [f"layer {i}" for i in range(N_LAYER)]
    assert [r["name"] for r in report["cka"]] == names
    assert [r["name"] for r in report["weight_change"]] == [*names, "final norm"]
    assert all(0.0 <= r["cka"] <= 1.0 + 1e-9 for r in report["cka"])
    cka = {r["name"]: r["cka"] for r in report["cka"]}
    assert cka["embed"] == pytest.approx(1.0, abs=1e-9) and cka["layer 0"] == pytest.approx(1.0, abs=1e-9)
    assert cka["layer 1"] < 1.0
    assert "note" not in report


def test_layer_report_with_a_grown_vocabulary(tmp_path, tokenizer):
    small = tokenizer.vocab_size - 30  # the pretrained model lacks the last 30 ids
    pre, ft = tiny_model(vocab=small), tiny_model(vocab=tokenizer.vocab_size)
    report = layer_report(saved(pre, tokenizer, tmp_path / "pre"), saved(ft, tokenizer, tmp_path / "ft"), TEXTS)
    json.dumps(report)
    assert "grew" in report["weight_change"][0]["note"]
    assert "note" in report and len(report["cka"]) == N_LAYER + 1
    assert all(0.0 <= r["cka"] <= 1.0 + 1e-9 for r in report["cka"])
