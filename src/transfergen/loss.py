"""Next-token cross-entropy, chunked over positions: the training and validation loss.

The plain way, `F.cross_entropy(logits.float(), labels)`, holds the whole (N, V) logits
in fp32 (plus the bf16 logits under autocast), its log-softmax and its gradient: at batch
16 x 256 and V = 8,192 each fp32 copy is 134 MB, and making them is memory traffic the
matmuls wait on. Here rows are taken `CHUNK_ELEMENTS // V` at a time; each chunk's fp32
logits give its loss and, when a gradient is wanted, its gradient right away
(softmax - one-hot, over the labelled count), so only one (rows, V) fp32 block is ever
alive. The backward then only scales the stored gradients by the incoming one.

Two entry points share that maths (`_chunk_loss`):

    head_loss(hidden, weight, labels)   hidden (N, d) and the output head's weight (V, d):
                                        the (N, V) logits never exist, not even in bf16
    lm_loss(logits, labels)             logits (B, T, V) a model already made (HF models)

Both return the mean over positions whose label is not IGNORE_INDEX; under autocast the
head matmuls run in the autocast dtype and everything after them in fp32, like the plain
way. `labels` are already shifted: labels[i] is the token after inputs[i].
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100  # label value excluded from the loss (prompt tokens, padding)
CHUNK_ELEMENTS = 1 << 22  # logits per chunk: 4M fp32 = 16 MB, a block that stays in the L2/L3 caches


def _rows(vocab: int) -> int:
    return max(1, CHUNK_ELEMENTS // vocab)


def _chunk_loss(logits: torch.Tensor, labels: torch.Tensor, scale: torch.Tensor,
                want_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(summed loss, d loss_sum*scale / d logits or None) of one chunk: logits (c, V) fp32, labels (c,)."""
    valid = labels != IGNORE_INDEX
    target = labels.clamp(min=0).unsqueeze(1)  # (c, 1); ignored rows read column 0, then count 0
    lse = torch.logsumexp(logits, dim=-1)  # (c,)
    loss = ((lse - logits.gather(1, target).squeeze(1)) * valid).sum()
    if not want_grad:
        return loss, None
    grad = logits.sub_(lse.unsqueeze(1)).exp_()  # softmax, in place of the chunk's logits
    grad.scatter_add_(1, target, torch.full_like(target, -1, dtype=grad.dtype))
    return loss, grad.mul_((valid * scale).unsqueeze(1))  # (c, V)


def _count(labels: torch.Tensor) -> torch.Tensor:
    return (labels != IGNORE_INDEX).sum().clamp(min=1).float()


class _HeadCrossEntropy(torch.autograd.Function):
    """mean CE of (hidden @ weight.T) against labels; gradients made during the forward."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                want: tuple[bool, bool]) -> torch.Tensor:
        n, (want_h, want_w) = _count(labels), want
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        g_hidden = torch.zeros_like(hidden) if want_h else None  # (N, d)
        g_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_w else None
        step = _rows(weight.shape[0])
        for s in range(0, hidden.shape[0], step):
            h = hidden[s:s + step]  # (c, d)
            z = h @ weight.t()  # (c, V), in the autocast dtype
            loss, grad = _chunk_loss(z.float(), labels[s:s + step], 1.0 / n, want_h or want_w)
            total += loss
            if grad is not None:
                grad = grad.to(z.dtype)  # back to the head matmul's dtype, as autograd would
                if want_h:
                    g_hidden[s:s + step] = grad @ weight
                if want_w:
                    g_weight += grad.t() @ h
        ctx.save_for_backward(g_hidden, g_weight)
        ctx.weight_dtype = weight.dtype
        return total / n

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        g_hidden, g_weight = ctx.saved_tensors
        return (None if g_hidden is None else g_hidden * g,
                None if g_weight is None else (g_weight * g).to(ctx.weight_dtype), None, None)


class _LogitsCrossEntropy(torch.autograd.Function):
    """mean CE of logits (N, V) against labels; the gradient made during the forward."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor, want_grad: bool) -> torch.Tensor:
        n = _count(labels)
        total = torch.zeros((), dtype=torch.float32, device=logits.device)
        g_logits = torch.empty_like(logits) if want_grad else None  # (N, V) in the logits' dtype
        step = _rows(logits.shape[1])
        for s in range(0, logits.shape[0], step):
            chunk = logits[s:s + step]  # a copy in fp32: _chunk_loss works in place, the caller's logits stay
            loss, grad = _chunk_loss(chunk.to(torch.float32, copy=True), labels[s:s + step], 1.0 / n, want_grad)
            total += loss
            if grad is not None:
                g_logits[s:s + step] = grad
        if want_grad:
            ctx.save_for_backward(g_logits)
        return total / n

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (g_logits,) = ctx.saved_tensors
        return g_logits * g.to(g_logits.dtype), None, None


def _wants_grad(t: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and t.requires_grad


def head_loss(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token CE of the output head: hidden (B, T, d), weight (V, d), labels (B, T)."""
    flat = hidden.reshape(-1, hidden.shape[-1])
    want = (_wants_grad(hidden), _wants_grad(weight))
    return _HeadCrossEntropy.apply(flat, weight, labels.reshape(-1), want)


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token CE over labelled positions: logits (B, T, V), labels (B, T)."""
    flat = logits.reshape(-1, logits.shape[-1])
    return _LogitsCrossEntropy.apply(flat, labels.reshape(-1), _wants_grad(logits))
