"""The chunked cross-entropy (loss.py) equals the plain one, value and gradients, in fp32 and
under bf16 autocast, with ignored labels and more than one chunk; and the model's loss path
(`model(x, labels=y)`) equals the loss of its logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from transfergen import loss as L
from transfergen.model import HFCausalLM, ModelShape, build_model


def _plain(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = hidden @ weight.t()
    return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=L.IGNORE_INDEX)


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(L, "CHUNK_ELEMENTS", 7 * 50)  # 7 rows of V=50 per chunk: 24 rows -> 4 chunks, the last short


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(2, 12, 16, generator=g, requires_grad=True)
    weight = torch.randn(50, 16, generator=g, requires_grad=True)
    labels = torch.randint(0, 50, (2, 12), generator=g)
    labels[0, :5] = L.IGNORE_INDEX  # a prompt
    labels[1, -2:] = L.IGNORE_INDEX  # padding
    return hidden, weight, labels


def _grads(fn, hidden, weight, labels):
    hidden.grad = weight.grad = None
    out = fn(hidden, weight, labels)
    (3.0 * out).backward()  # a non-unit upstream gradient
    return out.detach(), hidden.grad.clone(), weight.grad.clone()


def test_head_and_logits_losses_equal_plain_cross_entropy_in_fp32(small_chunks):
    hidden, weight, labels = _inputs()
    want = _grads(_plain, hidden, weight, labels)
    head = _grads(L.head_loss, hidden, weight, labels)
    from_logits = _grads(lambda h, w, y: L.lm_loss(h @ w.t(), y), hidden, weight, labels)
    for got in (head, from_logits):
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert head[1][0, :5].abs().sum() == 0 and head[1][0, 5:].abs().sum() > 0  # ignored rows: no gradient
    assert head[0].item() == pytest.approx(want[0].item(), rel=1e-6) and head[0] > 0
    logits = (hidden @ weight.t()).detach().requires_grad_()
    kept = logits.detach().clone()
    L.lm_loss(logits, labels).backward()
    assert torch.equal(logits.detach(), kept)  # the caller's logits are read, never overwritten


def test_chunked_loss_matches_plain_under_bf16_autocast(small_chunks):
    hidden, weight, labels = _inputs(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = _grads(_plain, hidden, weight, labels)
        head = _grads(L.head_loss, hidden, weight, labels)
    assert head[1].dtype == hidden.dtype and head[2].dtype == weight.dtype
    for a, b in zip(head, want, strict=True):
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-3)


def test_frozen_head_gets_no_gradient_and_no_grad_mode_makes_none(small_chunks):
    hidden, weight, labels = _inputs(2)
    weight.requires_grad_(False)
    L.head_loss(hidden, weight, labels).backward()
    assert weight.grad is None and hidden.grad is not None
    with torch.no_grad():
        value = L.head_loss(hidden, weight, labels)
    assert not value.requires_grad and value.item() == pytest.approx(_plain(hidden, weight, labels).item(), rel=1e-6)
    everything_ignored = torch.full_like(labels, L.IGNORE_INDEX)
    assert L.head_loss(hidden, weight, everything_ignored).item() == 0.0  # no labelled token: 0, not nan


def test_model_loss_path_equals_the_loss_of_its_logits():
    shape = ModelShape(vocab_size=40, d_model=16, n_layer=2, n_head=2, n_kv_head=2, d_ff=32, max_seq_len=16)
    model = build_model(shape, seed=0)
    x = torch.randint(4, 40, (3, 10))
    y = torch.roll(x, -1, 1)
    y[:, -1] = L.IGNORE_INDEX
    plain = F.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=L.IGNORE_INDEX)
    plain.backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    fused = model(x, labels=y)
    fused.backward()
    assert fused.item() == pytest.approx(plain.item(), rel=1e-6)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, want[n], rtol=1e-4, atol=1e-6, msg=n)
    wrapped = HFCausalLM(_LogitsOnly(model))  # the HF wrapper's path: lm_loss over its logits
    assert wrapped(x, labels=y).item() == pytest.approx(plain.item(), rel=1e-6)


class _LogitsOnly(torch.nn.Module):
    """Stands in for a transformers model: `(input_ids=...).logits`."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids: torch.Tensor, use_cache: bool):
        return type("Output", (), {"logits": self.inner(input_ids)})()
