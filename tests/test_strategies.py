"""Transfer strategies on a tiny TransferGenLM: flags, groups, hooks, LoRA export, L2-SP."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from transfergen.config import StrategyConfig, TrainConfig
from transfergen.errors import ConfigError, UserError
from transfergen.model import ModelShape, TransferGenLM, build_model
from transfergen.hub import load_model, save_model
from transfergen.hooks import describe_groups
from transfergen.strategies import STRATEGIES, apply_strategy, l2sp_penalty, merge_lora, model_layout
from transfergen.train import train

SHAPE = ModelShape(vocab_size=64, n_layer=4, d_model=32, n_head=4, n_kv_head=4, d_ff=64, max_seq_len=16)
TC = TrainConfig(lr=1e-3, weight_decay=0.1)


@pytest.fixture
def model() -> TransferGenLM:
    return build_model(SHAPE, seed=0)


def ids(seed: int = 1) -> torch.Tensor:
    return torch.randint(0, SHAPE.vocab_size, (2, 12), generator=torch.Generator().manual_seed(seed))


def apply(model, name: str, **opts):
    return apply_strategy(model, StrategyConfig(name=name, **opts), TC)


def trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def block(i: int) -> str:
    return f"model.layers.{i}."


def counts(model, result) -> dict:
    """The loop's own count of what the strategy left trainable (its setup record)."""
    return describe_groups(model, result.groups)


def group_params(result) -> list[int]:
    return [id(p) for g in result.groups for p in g["params"]]


# ---------------------------------------------------------------------------
# layout, registry, full


def test_layout_of_transfergen(model):
    lay = model_layout(model)
    assert lay.embed == ["model.embed_tokens.weight"] and lay.head == ["model.norm.weight"]
    assert lay.blocks == [f"model.layers.{i}" for i in range(4)] and lay.tied
    assert all(n.startswith(block(i)) for i, names in enumerate(lay.block_params) for n in names)


class GPT2Like(torch.nn.Module):
    """GPT-2's module names (transformer.wte/wpe/h/ln_f, tied lm_head) without transformers."""

    def __init__(self):
        super().__init__()
        self.transformer = torch.nn.Module()
        self.transformer.wte, self.transformer.wpe = torch.nn.Embedding(64, 8), torch.nn.Embedding(16, 8)
        self.transformer.h = torch.nn.ModuleList(torch.nn.Linear(8, 8) for _ in range(2))
        self.transformer.ln_f = torch.nn.LayerNorm(8)
        self.lm_head = torch.nn.Linear(8, 64, bias=False)
        self.lm_head.weight = self.transformer.wte.weight


def test_layout_of_hf_like_models_and_unknown_structure():
    from transfergen.model import HFCausalLM

    lay = model_layout(HFCausalLM(GPT2Like()))  # the wrapper's `hf.` prefix needs no entry
    assert lay.blocks == ["hf.transformer.h.0", "hf.transformer.h.1"] and lay.tied
    assert lay.embed == ["hf.transformer.wte.weight", "hf.transformer.wpe.weight"]
    assert lay.head == ["hf.transformer.ln_f.weight", "hf.transformer.ln_f.bias"]
    assert lay.block_params[1] == ["hf.transformer.h.1.weight", "hf.transformer.h.1.bias"]
    with pytest.raises(UserError, match="cannot find the transformer blocks"):
        model_layout(torch.nn.Sequential(torch.nn.Linear(2, 2)))


def test_unknown_strategy_names_key_and_registry(model):
    with pytest.raises(ConfigError, match=r"strategy\.name.*'nope'.*known: discriminative, freeze, full"):
        apply(model, "full+nope")
    with pytest.raises(ConfigError, match="repeats"):
        apply(model, "freeze+freeze", freeze_bottom=1)
    assert {"full", "freeze", "gradual", "discriminative", "reinit", "lora", "l2sp"} <= set(STRATEGIES)


def test_full_groups_hold_every_parameter_once(model):
    res = apply(model, "full")
    assert trainable(model) == {n for n, _ in model.named_parameters()}
    assert [g["name"] for g in res.groups] == ["embed+blocks.0-3 x1.00 decay",
                                               "blocks.0-3+head x1.00 no_decay"]
    ids_ = group_params(res)
    assert len(ids_) == len(set(ids_)) and id(model.lm_head.weight) in ids_  # tied: once
    assert sum(p.numel() for g in res.groups for p in g["params"]) == model.num_params()
    assert res.groups[1]["weight_decay"] == 0.0 and all(g["base_lr"] == TC.lr for g in res.groups)
    assert counts(model, res)["frozen_params"] == 0 and res.summary["log"][0].startswith("full:")
    assert res.hooks.export is None


# ---------------------------------------------------------------------------
# freeze and gradual


def test_freeze_bottom_and_embeddings(model):
    res = apply(model, "freeze", freeze_bottom=2, freeze_embeddings=True)
    t = trainable(model)
    assert not any(n.startswith((block(0), block(1))) for n in t)
    assert all(any(n.startswith(block(i)) for n in t) for i in (2, 3))
    assert not model.lm_head.weight.requires_grad and "model.norm.weight" in t  # tied head frozen
    c = counts(model, res)
    assert sum(g_["params"] for g_ in c["param_groups"]) == c["trainable_params"]
    assert c["frozen_params"] == model.num_params() - model.num_params(trainable_only=True)
    assert "tied" in res.summary["log"][0]
    assert [g["name"] for g in res.groups] == ["blocks.2-3 x1.00 decay", "blocks.2-3+head x1.00 no_decay"]


def test_freeze_train_top(model):
    apply(model, "freeze", train_top=1)
    assert trainable(model) == {n for n, _ in model.named_parameters() if n.startswith(block(3))} | {
        "model.norm.weight"}


def test_freeze_fails_loudly(model):
    with pytest.raises(ConfigError, match=r"froze nothing: set strategy\.freeze_bottom"):
        apply(model, "freeze")
    with pytest.raises(ConfigError, match=r"strategy\.freeze_bottom.*4 blocks, got 5"):
        apply(model, "freeze", freeze_bottom=5)
    with pytest.raises(ConfigError, match=r"strategy\.train_top"):
        apply(model, "freeze", train_top=9)


def test_gradual_schedule_one_more_block_every_period(model):
    res = apply(model, "gradual", unfreeze_every=10)

    def blocks_at(step: int) -> int:
        res.hooks.on_step[0](step, None)
        return sum(any(n.startswith(block(i)) for n in trainable(model)) for i in range(4))

    steps = (0, 9, 10, 19, 20, 30, 39, 40, 1000)
    assert [blocks_at(s) for s in steps] == [1, 1, 2, 2, 3, 4, 4, 4, 4]


def test_gradual_hook_unfreezes_top_down_then_embeddings(model):
    res = apply(model, "gradual", unfreeze_every=10)
    all_names = {n for n, _ in model.named_parameters()}
    # Everything is in the optimizer from step 0, though only the top block + norm train.
    assert sum(len(g["params"]) for g in res.groups) == len(all_names)
    assert res.summary["pending_params"] + counts(model, res)["trainable_params"] == model.num_params()

    def state(step: int) -> tuple[int, bool]:
        for fn in res.hooks.on_step:
            fn(step, None)
        t = trainable(model)
        blocks = sum(any(n.startswith(block(i)) for n in t) for i in range(4))
        assert all(any(n.startswith(block(i)) for n in t) for i in range(4 - blocks, 4))  # from the top
        assert "model.norm.weight" in t
        return blocks, "model.embed_tokens.weight" in t

    assert [state(s) for s in (0, 9, 10, 25, 30, 39, 40)] == [
        (1, False), (1, False), (2, False), (3, False), (4, False), (4, False), (4, True)]


def test_gradual_resumed_late_unfreezes_at_once_and_respects_freeze(model):
    res = apply(model, "freeze+gradual", freeze_bottom=1, unfreeze_every=5)
    res.hooks.on_step[0](100, None)
    t = trainable(model)
    assert not any(n.startswith(block(0)) for n in t) and "model.embed_tokens.weight" in t


# ---------------------------------------------------------------------------
# discriminative and reinit


def test_discriminative_ratios(model):
    res = apply(model, "discriminative", lr_decay=0.5)
    lr_of = {id(p): g["base_lr"] for g in res.groups for p in g["params"]}
    p = dict(model.named_parameters())
    for i in range(4):
        assert lr_of[id(p[f"model.layers.{i}.mlp.up_proj.weight"])] == pytest.approx(TC.lr * 0.5 ** (3 - i))
    assert lr_of[id(p["model.norm.weight"])] == TC.lr
    assert lr_of[id(p["model.embed_tokens.weight"])] == pytest.approx(TC.lr * 0.5 ** 4)
    assert "embed x0.06 decay" in [g["name"] for g in res.groups]
    assert "tied to the embedding" in res.summary["log"][0]
    with pytest.raises(ConfigError, match=r"strategy\.lr_decay"):
        apply(model, "discriminative", lr_decay=0.0)


def test_reinit_top_block_matches_model_init(model):
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    torch.manual_seed(0)
    res = apply(model, "reinit+discriminative", reinit_top=2, lr_decay=0.5)
    for n, p in model.named_parameters():
        changed = not torch.equal(p, before[n])
        assert changed == n.startswith((block(2), block(3))) or p.dim() == 1, n
    layer = model.model.layers[3]
    assert layer.input_layernorm.weight.eq(1).all()
    assert layer.mlp.up_proj.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert layer.mlp.down_proj.weight.std().item() == pytest.approx(0.02 / math.sqrt(8), rel=0.1)
    assert "reinit: re-initialised blocks 2-3" in res.summary["log"][0]
    lrs = sorted({g["base_lr"] for g in res.groups})
    assert lrs == pytest.approx([TC.lr * 0.5 ** k for k in (4, 3, 2, 1, 0)])
    with pytest.raises(ConfigError, match=r"strategy\.reinit_top"):
        apply(build_model(SHAPE, seed=0), "reinit", reinit_top=5)


# ---------------------------------------------------------------------------
# LoRA


def test_lora_step0_equals_base_and_only_adapters_train(model):
    x = ids()
    with torch.no_grad():
        base = model(x)
    res = apply(model, "lora", lora_rank=4, lora_targets=["q_proj", "v_proj"], lora_lr=5e-3)
    with torch.no_grad():
        assert torch.equal(model(x), base)
    t = trainable(model)
    assert t and all(".lora_A." in n or ".lora_B." in n for n in t) and len(t) == 4 * 2 * 2
    assert [g["base_lr"] for g in res.groups] == [5e-3] and res.groups[0]["weight_decay"] == TC.weight_decay
    assert res.hooks.export is not None and "lora: rank 4" in res.summary["log"][0]


def test_lora_export_merges_saves_and_loads(model, tmp_path: Path):
    res = apply(model, "lora", lora_rank=4, lora_dropout=0.1)
    with torch.no_grad():  # make the adapters matter
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    model.eval()
    x = ids()
    with torch.no_grad():
        want = model(x)
        plain = res.hooks.export(model)
        assert not any("lora" in n for n, _ in plain.named_parameters())
        assert plain.lm_head.weight is plain.model.embed_tokens.weight
        assert torch.allclose(plain(x), want, atol=1e-5)
    assert any("lora" in n for n, _ in model.named_parameters())  # input untouched
    save_model(plain, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert type(loaded) is TransferGenLM
    with torch.no_grad():
        assert torch.allclose(loaded(x), want, atol=1e-5)


def test_lora_fails_loudly(model):
    no_match = r"strategy\.lora_targets: no linear.*e\.g\. .*model\.layers\.0\.self_attn\.q_proj"
    with pytest.raises(ConfigError, match=no_match):
        apply(model, "lora", lora_targets=["qkv"])
    with pytest.raises(ConfigError, match="tied"):
        apply(model, "lora", lora_targets=["lm_head"])
    with pytest.raises(ConfigError, match="'lora' must come first"):
        apply(model, "discriminative+lora")


def test_merge_lora_is_exported_helper(model):
    apply(model, "lora", lora_targets=["down_proj"])
    assert type(merge_lora(model).model.layers[0].mlp.down_proj) is torch.nn.Linear


# ---------------------------------------------------------------------------
# L2-SP


def test_l2sp_zero_at_init_and_quadratic(model):
    res = apply(model, "l2sp", l2sp_alpha=0.5)
    (term,) = res.hooks.loss_terms
    assert term().item() == 0.0
    w = model.model.layers[0].mlp.up_proj.weight
    with torch.no_grad():
        w.add_(0.1)
    first = term().item()
    assert first == pytest.approx(0.5 / 2 * 0.01 * w.numel(), rel=1e-4)
    with torch.no_grad():
        w.add_(0.1)
    assert term().item() == pytest.approx(4 * first, rel=1e-4)
    assert all(g["weight_decay"] == 0.0 for g in res.groups)  # L2-SP replaces plain decay


def test_freeze_plus_l2sp_anchors_only_trainable_pretrained(model):
    res = apply(model, "freeze+l2sp", freeze_bottom=3)
    assert "l2sp: alpha 0.01 over" in res.summary["log"][1]
    with torch.no_grad():  # a frozen block changing (it cannot in training) is not penalised
        model.model.layers[0].mlp.up_proj.weight.add_(1.0)
    assert res.hooks.loss_terms[0]().item() == 0.0
    anchored = int(res.summary["log"][1].split("over ")[1].split(" ")[0].replace(",", ""))
    assert anchored == counts(model, res)["trainable_params"]


def test_l2sp_skips_new_parameters(model):
    res = apply(model, "l2sp+reinit", reinit_top=1)
    decay = [g for g in res.groups if g["weight_decay"] > 0]
    assert decay and decay[0]["name"].startswith("blocks.3")  # the new block keeps plain decay
    with torch.no_grad():  # the re-initialised block is not pulled back anywhere
        model.model.layers[3].mlp.up_proj.weight.add_(1.0)
    assert res.hooks.loss_terms[0]().item() == 0.0
    with torch.no_grad():
        model.model.layers[2].mlp.up_proj.weight.add_(1.0)
    assert res.hooks.loss_terms[0]().item() > 0.0


def test_lora_plus_l2sp_has_nothing_to_anchor(model):
    with pytest.raises(ConfigError, match="strategy 'l2sp': no pretrained parameter trains"):
        apply(model, "lora+l2sp")
    assert l2sp_penalty([], 1.0).item() == 0.0


# ---------------------------------------------------------------------------
# through the real loop


class RandomBlocks:
    """A few fixed random token blocks, cycled."""

    def __init__(self, batch: int = 2, seq: int = 12):
        g = torch.Generator().manual_seed(0)
        self.blocks = [torch.randint(0, SHAPE.vocab_size, (batch, seq + 1), generator=g) for _ in range(3)]
        self.i = 0

    def next_batch(self):
        blk = self.blocks[self.i % len(self.blocks)]
        self.i += 1
        return blk[:, :-1], blk[:, 1:]

    def state_dict(self) -> dict:
        return {"i": self.i}

    def load_state_dict(self, s: dict) -> None:
        self.i = s["i"]


class NoTokenizer:
    def save(self, out_dir) -> None:
        Path(out_dir, "tokenizer.json").write_text("{}")


def test_training_step_moves_only_trainable(model, tmp_path: Path):
    res = apply(model, "freeze+l2sp", freeze_bottom=2, freeze_embeddings=True)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = TrainConfig(max_steps=3, batch_size=2, seq_len=12, lr=1e-2, warmup_steps=0, log_every=1,
                      eval_every=100, save_every=100, threads=1)
    train(model, NoTokenizer(), RandomBlocks(), [], cfg, tmp_path, groups=res.groups, hooks=res.hooks)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) != p.requires_grad, n


def test_gradual_through_the_loop_keeps_pending_still_until_unfrozen(model, tmp_path: Path):
    res = apply(model, "gradual", unfreeze_every=1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = TrainConfig(max_steps=3, batch_size=2, seq_len=12, lr=1e-2, warmup_steps=0, log_every=1,
                      eval_every=100, save_every=100, threads=1)
    train(model, NoTokenizer(), RandomBlocks(), [], cfg, tmp_path, groups=res.groups, hooks=res.hooks)
    # steps 0, 1, 2 train the top 1, 2, 3 blocks: block 0 and the embedding never moved.
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) == n.startswith((block(0), "model.embed_tokens")), n


def test_lora_adapter_only_when_the_adapters_alone_rebuild_the_model(model, tmp_path):
    """An adapter is planned for a base folder; not when base weights train as well."""
    from transfergen.strategies import Plan

    plan = Plan(base=str(tmp_path))
    STRATEGIES["lora"](model, StrategyConfig(name="lora"), plan)
    plan.finalizers[0]()
    assert plan.save_extra is not None
    plan.save_extra(model, tmp_path)
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    plan2, other = Plan(base=str(tmp_path)), build_model(SHAPE, seed=0)
    STRATEGIES["lora"](other, StrategyConfig(name="lora"), plan2)
    other.model.norm.weight.requires_grad_(True)  # as if a later entry trained a base weight
    plan2.finalizers[0]()
    assert plan2.save_extra is None and "'model.norm.weight' trains too" in plan2.log[-1]
