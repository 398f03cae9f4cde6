"""The fused decode path (`decode.PackedLM`) computes what the module forward computes."""

from __future__ import annotations

import pytest
import torch

from transfergen.config import StrategyConfig, TrainConfig
from transfergen import decode
from transfergen.decode import PackedLM, pack
from transfergen.generate import GenerationConfig, generate
from transfergen.layers import KVCache
from transfergen.strategies import apply_strategy

from test_generate import PAD, TOK, prompts, tiny_model


def _decode_logits(lm, model, rows: list[list[int]], steps: int = 5) -> list[torch.Tensor]:
    """Logits of a left-padded prefill, then `steps` one-token steps, through `lm`."""
    P = max(map(len, rows))
    ids = torch.tensor([[PAD] * (P - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (P - len(r)) + [1] * len(r) for r in rows])
    s = model.shape
    cache = KVCache(s.n_layer, len(rows), s.n_kv_head, P + steps, s.head_dim)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    out = [lm(ids, cache=cache, position_ids=pos, attention_mask=mask)]
    for t in range(steps):
        tok = out[-1][:, -1].argmax(-1, keepdim=True)  # (B,1)
        mask = torch.cat([mask, torch.ones_like(tok)], 1)
        out.append(lm(tok, cache=cache, position_ids=pos[:, -1:] + t + 1, attention_mask=mask))
    return out


@pytest.mark.parametrize("n_kv_head", [4, 2])
def test_packed_logits_equal_module_forward(n_kv_head, monkeypatch):
    monkeypatch.setattr(decode, "MAX_ROWS", 10**6)  # the packed path for the prefill too
    model = tiny_model(n_kv_head=n_kv_head)
    rows = prompts()
    with torch.no_grad():
        ref = _decode_logits(model, model, rows)
    got = _decode_logits(PackedLM(model), model, rows)
    assert len(got) == len(ref) == 6
    for a, b in zip(got, ref, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("beams", [1, 3])
def test_fused_generate_gives_the_same_tokens(beams):
    model, rows = tiny_model(), prompts()
    kw = dict(max_new_tokens=12, num_beams=beams, no_repeat_ngram_size=3)
    fused = generate(model, TOK, rows, GenerationConfig(**kw))
    plain = generate(model, TOK, rows, GenerationConfig(fused=False, **kw))
    assert fused == plain and any(len(r) > 3 for r in fused)


def test_pack_leaves_adapted_models_alone():
    """LoRA-wrapped projections are not plain linears: packing them would drop the adapter."""
    model = tiny_model()
    assert isinstance(pack(model), PackedLM)
    apply_strategy(model, StrategyConfig(name="lora", lora_targets=["q_proj", "v_proj"]), TrainConfig())
    assert pack(model) is model
