"""Decoding: the KV cache equals a full forward, batching changes nothing, and greedy, beam
search and the logits processors give exactly transformers' tokens on the same weights."""

from __future__ import annotations

import types

import pytest
import torch

from transfergen.cli import main
from transfergen.config import ModelConfig
from transfergen.generate import GenerationConfig, generate, generate_text, sample
from transfergen.layers import KVCache
from transfergen.model import HFCausalLM, build_model, resolve_shape
from transfergen.hub import save_model

V, BOS, EOS, PAD = 97, 1, 2, 0
TOK = types.SimpleNamespace(bos_id=BOS, eos_id=EOS, pad_id=PAD)  # all generate needs for id prompts


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny ops run best on 1 thread


def tiny_model(n_kv_head: int = 2, vocab: int = V, eos_gain: float = 2.0, init_std: float = 0.3):
    """Seeded tiny Llama with peaked outputs (init_std 0.3: no near-ties for beam search to
    break differently) and a boosted eos embedding (tied head) so rows stop at varied lengths."""
    cfg = ModelConfig(preset="tiny", n_layer=2, d_model=64, n_head=4, n_kv_head=n_kv_head, d_ff=96,
                      max_seq_len=64, rope_theta=500.0, init_std=init_std)
    model = build_model(resolve_shape(cfg, vocab_size=vocab, bos_id=BOS, eos_id=EOS, pad_id=PAD), seed=0)
    with torch.no_grad():
        model.model.embed_tokens.weight[EOS] *= eos_gain
    return model.eval()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(ours, transformers' LlamaForCausalLM) with identical saved weights."""
    from transformers import LlamaForCausalLM

    model, folder = tiny_model(), tmp_path_factory.mktemp("tiny")
    save_model(model, folder)
    return model, LlamaForCausalLM.from_pretrained(folder, local_files_only=True).eval()


def prompts(lengths=(3, 7, 5, 9, 4, 6, 2, 8), seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [[BOS, *torch.randint(3, V, (n,), generator=g).tolist()] for n in lengths]


def hf_generate(hf, rows: list[list[int]], max_new: int = 20, **kw) -> list[list[int]]:
    """transformers' generate, one prompt at a time, eos stripped like ours."""
    out = []
    for r in rows:
        ids = torch.tensor([r])
        new = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new, eos_token_id=EOS,
                          pad_token_id=PAD, bos_token_id=BOS, **kw)[0, len(r):].tolist()
        out.append(new[:new.index(EOS)] if EOS in new else new)
    return out


def left_pad(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(map(len, rows))
    ids = torch.tensor([[PAD] * (T - len(r)) + r for r in rows])
    return ids, (torch.arange(T)[None] >= torch.tensor([T - len(r) for r in rows])[:, None]).long()


# ---------------------------------------------------------------------------
# the cache


@pytest.mark.parametrize("n_kv_head", [2, 4])
@torch.no_grad()
def test_cache_matches_full_forward(n_kv_head):
    model = tiny_model(n_kv_head, init_std=0.02)  # the default init: logits O(1), so 1e-5 is float32 noise
    x = torch.tensor(prompts((12, 12, 12))).long()  # (3,13)
    full = model(x)
    cache = KVCache(2, 3, n_kv_head, 20, 16)
    inc = torch.cat([model(x[:, :5], cache=cache), model(x[:, 5:6], cache=cache), model(x[:, 6:], cache=cache)], 1)
    torch.testing.assert_close(inc, full, atol=1e-5, rtol=0)
    # left-padded batch: prefill 9 slots, then the rest in steps of one; pads hidden, positions per row
    rows = prompts((4, 11, 8))
    ids, mask = left_pad(rows)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    cache, T = KVCache(2, 3, n_kv_head, 20, 16), ids.shape[1]
    outs = [model(ids[:, :9], cache=cache, position_ids=pos[:, :9], attention_mask=mask[:, :9])]
    for t in range(9, T):
        outs.append(model(ids[:, t:t + 1], cache=cache, position_ids=pos[:, t:t + 1], attention_mask=mask[:, :t + 1]))
    out = torch.cat(outs, 1)
    assert torch.isfinite(out).all()
    for i, r in enumerate(rows):
        torch.testing.assert_close(out[i, T - len(r):], model(torch.tensor([r]))[0], atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------
# our decoding against itself


@pytest.mark.parametrize("cfg", [GenerationConfig(max_new_tokens=16),
                                 GenerationConfig(max_new_tokens=16, num_beams=3, length_penalty=0.6),
                                 GenerationConfig(max_new_tokens=16, no_repeat_ngram_size=2, repetition_penalty=1.2)])
def test_batched_equals_one_at_a_time(pair, cfg):
    model, rows = pair[0], prompts()
    alone = [generate(model, TOK, [r], cfg)[0] for r in rows]
    assert generate(model, TOK, rows, cfg) == alone
    cfg.batch_size = 3  # several batches, each left padded differently
    assert generate(model, TOK, rows, cfg) == alone


@torch.no_grad()
def test_greedy_is_argmax_rollout_and_stops_at_eos(pair):
    model, rows = pair[0], prompts()
    outs = generate(model, TOK, rows, GenerationConfig(max_new_tokens=12))
    assert any(len(o) < 12 for o in outs) and any(len(o) == 12 for o in outs)  # some rows hit eos
    for r, o in zip(rows, outs, strict=True):
        x = list(r)
        for _ in range(12):
            nxt = int(model(torch.tensor([x]))[0, -1].argmax())
            if nxt == EOS:
                break
            x.append(nxt)
        assert o == x[len(r):] and EOS not in o


def test_beam_one_equals_greedy(pair):
    rows = prompts()
    assert generate(pair[0], TOK, rows, GenerationConfig(max_new_tokens=16, num_beams=1, length_penalty=0.6)) == \
        generate(pair[0], TOK, rows, GenerationConfig(max_new_tokens=16))


def test_sampling_reproducible(pair):
    model, rows = pair[0], prompts()
    cfg = GenerationConfig(max_new_tokens=16, do_sample=True, temperature=1.3, top_k=20, top_p=0.9, seed=7)
    a = generate(model, TOK, rows, cfg)
    assert a == generate(model, TOK, rows, cfg)
    cfg.seed = 8
    assert a != generate(model, TOK, rows, cfg)
    greedy = generate(model, TOK, rows, GenerationConfig(max_new_tokens=16))
    for narrow in (dict(top_k=1), dict(top_p=0.0)):  # one candidate left: sampling is argmax
        sampled = GenerationConfig(max_new_tokens=16, do_sample=True, seed=3, **narrow)
        assert generate(model, TOK, rows, sampled) == greedy


# ---------------------------------------------------------------------------
# against transformers


@pytest.mark.parametrize("length_penalty", [0.6, 1.0])
def test_beam_search_matches_transformers(pair, length_penalty):
    model, hf = pair
    rows = prompts()
    kw = dict(num_beams=4, length_penalty=length_penalty, early_stopping=True)
    ours = generate(model, TOK, rows, GenerationConfig(max_new_tokens=20, **kw))
    assert ours == hf_generate(hf, rows, do_sample=False, **kw)
    assert len({len(o) for o in ours}) > 2  # eos at several lengths, so the pool logic is exercised


@pytest.mark.parametrize("kw", [dict(repetition_penalty=1.3), dict(no_repeat_ngram_size=2),
                                dict(num_beams=3, early_stopping=False), dict(num_beams=3, length_penalty=2.0,
                                                                             early_stopping="never")])
def test_processors_and_beam_flags_match_transformers(pair, kw):
    model, hf = pair
    rows = prompts()
    assert generate(model, TOK, rows, GenerationConfig(max_new_tokens=20, **kw)) == \
        hf_generate(hf, rows, do_sample=False, **kw)


def test_hf_wrapper_uses_transformers_generate(pair):
    model, hf = pair
    rows = prompts((3, 7, 5))
    for cfg in (GenerationConfig(max_new_tokens=10), GenerationConfig(max_new_tokens=10, num_beams=3)):
        assert generate(HFCausalLM(hf), TOK, rows, cfg) == generate(model, TOK, rows, cfg)


# ---------------------------------------------------------------------------
# text in, text out: sample() and the CLI


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    from transfergen.tokenizer import TextTokenizer

    docs = [f"the king speaks of the crown number {i}, and the queen forgets" for i in range(200)]
    tok = TextTokenizer.train(docs, vocab_size=300)
    folder = tmp_path_factory.mktemp("run")
    save_model(tiny_model(vocab=tok.vocab_size, eos_gain=1.0), folder)
    tok.save(folder)
    return folder, tok


def test_sample_and_generate_text(run_folder):
    from transfergen.hub import load_model

    folder, tok = run_folder
    model = load_model(folder)
    text = sample(model, tok, "The king", max_new_tokens=8, seed=1)
    assert text.startswith("The king") and text == sample(model, tok, "The king", max_new_tokens=8, seed=1)
    greedy = generate_text(model, tok, ["The king", "a"], GenerationConfig(max_new_tokens=8))
    assert sample(model, tok, "a", max_new_tokens=8, temperature=0) == "a" + greedy[1]
    assert sample(model, tok, "a", max_new_tokens=500, temperature=0)  # capped at max_seq_len, no error


def test_cli_prints_one_line_per_prompt(run_folder, tmp_path, capsys):
    folder, _ = run_folder
    pfile = tmp_path / "prompts.txt"
    pfile.write_text("the queen\nnumber 3\nand\n", encoding="utf-8")
    assert main(["generate", "--model", str(folder), "--prompt", "The king", "--prompts-file", str(pfile),
                 "--num-beams", "3", "--length-penalty", "0.8", "--no-repeat-ngram-size", "2",
                 "--repetition-penalty", "1.1", "--max-new-tokens", "6"]) == 0
    lines = capsys.readouterr().out.split("\n")[:-1]
    assert all(ln.splitlines() == [ln] for ln in lines)  # no other line breaks either (\x1c, \u2028, ...)
    starts = ["The king", "the queen", "number 3", "and"]
    assert len(lines) == 4 and [ln[:len(p)] for ln, p in zip(lines, starts, strict=True)] == starts
    assert main(["generate", "--model", str(folder), "--prompt", "x", "--greedy", "--top-p", "0.5"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1  # control chars escaped
    assert main(["generate", "--model", str(folder), "--prompt", "x", "--num-beams", "0"]) == 2
