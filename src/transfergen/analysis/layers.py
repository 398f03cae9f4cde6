"""Where did fine-tuning change the model? Per-layer weight change, representation
similarity (linear CKA) and attention maps, comparing a pretrained and a fine-tuned model.

Layer rows are named "embed", "layer 0" .. "layer N-1" (and "final norm" for weights), so
the weight table and the CKA table line up. Everything works on `TransferGenLM`; the
weight and CKA comparisons also work on `HFCausalLM` and plain `transformers` models.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn as nn

from ..layers import repeat_kv
from ..model import HFCausalLM, TransferGenLM, unwrap

# Texts per forward pass in `layer_report`: small enough for CPU, padding stays modest.
_REPORT_BATCH = 8
# Wrapper prefixes that do not change what a parameter is (HFCausalLM, compile, DDP).
_WRAPPER_RE = re.compile(r"^(?:(?:hf|_orig_mod|module)\.)+")
# Attribute names of the norm applied after the last decoder layer (Llama, GPT-2, others).
_FINAL_NORMS = ("norm", "ln_f", "final_layernorm", "final_layer_norm")
_LAYER_RE = re.compile(r"\.layers\.(\d+)\.")


# --- weight change ------------------------------------------------------------


def _canonical(name: str) -> str:
    """State-dict key without wrapper prefixes, so HFCausalLM matches TransferGenLM."""
    return _WRAPPER_RE.sub("", name)


def _group_of(name: str) -> str | None:
    """'layer i', 'embed', 'final norm' or None (tied head, buffers: not compared)."""
    match = _LAYER_RE.search("." + name)
    if match:
        return f"layer {int(match.group(1))}"
    if "embed" in name:
        return "embed"
    parts = name.split(".")
    if len(parts) >= 2 and parts[-2] in _FINAL_NORMS:
        return "final norm"
    return None


def _group_key(group: str) -> tuple[int, int]:
    """Sort order: embed, layer 0 .. N-1, final norm."""
    if group.startswith("layer "):
        return (1, int(group.split()[1]))
    return (0 if group == "embed" else 2, 0)


def _float_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Floating-point state-dict entries by canonical name."""
    return {_canonical(k): v for k, v in model.state_dict().items() if v.is_floating_point()}


def _aligned(name: str, pre: torch.Tensor, ft: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, str | None]:
    """Both tensors cut to a common shape; embeddings may differ in rows (vocab grew)."""
    if pre.shape == ft.shape:
        return pre, ft, None
    if "embed" in name and pre.dim() == 2 and pre.shape[1:] == ft.shape[1:]:
        rows = min(pre.shape[0], ft.shape[0])
        verb = "grew" if ft.shape[0] > pre.shape[0] else "shrank"
        note = f"vocabulary {verb} from {pre.shape[0]} to {ft.shape[0]} rows; compared the first {rows}"
        return pre[:rows], ft[:rows], note
    raise ValueError(f"weight_change: parameter '{name}' has shape {tuple(pre.shape)} in the "
                     f"pretrained model but {tuple(ft.shape)} in the fine-tuned one")


def _group_sums(pre: dict[str, torch.Tensor], ft: dict[str, torch.Tensor]) -> dict[str, list]:
    """group -> [sum (W_ft - W_pre)^2, sum W_pre^2, element count, note] over shared names."""
    sums: dict[str, list] = {}
    for name in (k for k in pre if k in ft):
        group = _group_of(name)
        if group is None:
            continue
        a, b, note = _aligned(name, pre[name], ft[name])
        a, b = a.double(), b.to(a.device).double()  # fp64: millions of squares summed
        acc = sums.setdefault(group, [0.0, 0.0, 0, None])
        acc[0] += float((b - a).pow(2).sum())
        acc[1] += float(a.pow(2).sum())
        acc[2] += a.numel()
        acc[3] = acc[3] or note
    return sums


@torch.no_grad()
def weight_change(pretrained: nn.Module, finetuned: nn.Module) -> list[dict]:
    """Relative Frobenius change ||W_ft - W_pre|| / ||W_pre|| per layer group.

    Rows {"name", "relative_change", "params"} (+ "note" when the vocabulary changed) for
    "embed", "layer 0" .. "layer N-1" and "final norm", matching parameters by name. The
    tied output head is the embedding and is not counted twice.
    """
    pre, ft = _float_state(pretrained), _float_state(finetuned)
    if not pre.keys() & ft.keys():
        raise ValueError(f"weight_change: no parameter names of {type(unwrap(finetuned)).__name__} "
                         f"match those of {type(unwrap(pretrained)).__name__}")
    sums, rows = _group_sums(pre, ft), []
    for group in sorted(sums, key=_group_key):
        diff, base, count, note = sums[group]
        change = math.sqrt(diff / base) if base > 0 else (0.0 if diff == 0 else math.inf)
        rows.append({"name": group, "relative_change": change, "params": count, **({"note": note} if note else {})})
    return rows


# --- hidden states ------------------------------------------------------------


@contextmanager
def _inference(model: nn.Module) -> Iterator[None]:
    """Eval mode and no autograd for the block; the training flag is put back after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _own_states(model: TransferGenLM, input_ids: torch.Tensor, n_layers: int | None = None) -> list[torch.Tensor]:
    """Embedding output and the outputs of the first `n_layers` decoder layers, each (B,T,d)."""
    x = model.model.embed_tokens(input_ids)  # (B,T,d)
    cos, sin = model.model.rotary_emb(input_ids.shape[1], dtype=x.dtype)  # as TransferGenLM.forward
    states = [x]
    for layer in model.model.layers[:n_layers]:
        x = layer(x, cos, sin)  # no cache, no mask: plain causal attention
        states.append(x)
    return states


def _final_norm(hf: nn.Module) -> nn.Module | None:
    """The norm after the last decoder layer of a transformers model, when it has a known name."""
    base = getattr(hf, "base_model", hf)
    for name in _FINAL_NORMS:
        module = getattr(base, name, None)
        if isinstance(module, nn.Module):
            return module
    return None


def _hf_states(hf: nn.Module, input_ids: torch.Tensor) -> list[torch.Tensor]:
    """transformers' hidden states with the last one taken *before* the final norm.

    HF reports the last layer's output after the final norm; ours is the raw residual
    stream. A pre-hook on the norm captures its input so both kinds of model line up.
    """
    captured: list[torch.Tensor] = []
    norm = _final_norm(hf)
    handle = None
    if norm is not None:
        handle = norm.register_forward_pre_hook(
            lambda _m, args, kwargs: captured.append(args[0] if args else next(iter(kwargs.values()))),
            with_kwargs=True)
    try:
        out = hf(input_ids=input_ids, output_hidden_states=True, use_cache=False)
    finally:
        if handle is not None:
            handle.remove()
    states = list(out.hidden_states)  # n_layer + 1 tensors (B,T,d)
    if captured:
        states[-1] = captured[-1]
    return states


def hidden_states(model: nn.Module, input_ids: torch.Tensor) -> list[torch.Tensor]:
    """(B,T) ids -> n_layer+1 tensors (B,T,d): the embedding output, then each layer's output.

    Causal, no cache, no padding mask (right padding leaves real positions untouched).
    The last entry is before the final norm for every kind of model.
    """
    core = unwrap(model)
    with _inference(model):
        ids = input_ids.to(next(core.parameters()).device)
        if isinstance(core, TransferGenLM):
            return _own_states(core, ids)
        return _hf_states(core.hf if isinstance(core, HFCausalLM) else core, ids)


# --- CKA ----------------------------------------------------------------------


class _CKAStats:
    """Running float64 sums from which linear CKA follows, so no activations are kept.

    Rows are shifted by the first batch's means before summing: centring is shift
    invariant, and the shift keeps X^T X - n m m^T from cancelling catastrophically.
    """

    def __init__(self) -> None:
        self.n = 0
        self.shift: tuple[torch.Tensor, torch.Tensor] | None = None
        self.sums: list[torch.Tensor] | None = None  # sum x (d1), sum y (d2), XtX, YtY, YtX

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Add rows x (n,d1) and y (n,d2) (row i of both is the same input position)."""
        if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0]:
            raise ValueError(f"CKA needs (n, d1) and (n, d2), got {tuple(x.shape)} and {tuple(y.shape)}")
        x, y = x.detach().double(), y.detach().to(x.device).double()
        if self.shift is None:
            self.shift = (x.mean(0), y.mean(0))
        x, y = x - self.shift[0], y - self.shift[1]
        new = [x.sum(0), y.sum(0), x.T @ x, y.T @ y, y.T @ x]
        self.sums = new if self.sums is None else [a + b.to(a.device) for a, b in zip(self.sums, new, strict=True)]
        self.n += x.shape[0]

    def value(self) -> float:
        """||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F); 0.0 when a side is constant."""
        if not self.n:
            raise ValueError("CKA of zero rows")
        sx, sy, xx, yy, yx = self.sums
        mx, my = sx / self.n, sy / self.n
        # Centred cross products: sum (x-mx)(y-my)^T = sum x y^T - n mx my^T.
        cxx = xx - self.n * torch.outer(mx, mx)
        cyy = yy - self.n * torch.outer(my, my)
        cyx = yx - self.n * torch.outer(my, mx)
        den = float(torch.linalg.matrix_norm(cxx) * torch.linalg.matrix_norm(cyy))
        return float(torch.linalg.matrix_norm(cyx) ** 2) / den if den > 0 else 0.0


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA (Kornblith et al. 2019) of representations x (n,d1) and y (n,d2), in float64.

    1 for identical representations, invariant to orthogonal maps and isotropic scaling
    of either side; 0.0 when either side is constant over the n rows.
    """
    stats = _CKAStats()
    stats.update(x, y)
    return stats.value()


def _flat(h: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """(B,T,d) -> (n,d): the positions `keep` marks (all when None)."""
    return h.reshape(-1, h.shape[-1]) if keep is None else h[keep.to(h.device)]


def _cka_rows(pretrained: nn.Module, finetuned: nn.Module, pre_batches: Sequence[torch.Tensor],
              ft_batches: Sequence[torch.Tensor], masks: Sequence[torch.Tensor | None]) -> list[dict]:
    """Per-layer CKA; the two models may read different ids (vocab remapping) per batch."""
    stats: list[_CKAStats] | None = None
    for ids_pre, ids_ft, mask in zip(pre_batches, ft_batches, masks, strict=True):
        h_pre, h_ft = hidden_states(pretrained, ids_pre), hidden_states(finetuned, ids_ft)
        if len(h_pre) != len(h_ft):
            raise ValueError(f"layer_cka: the models have {len(h_pre) - 1} and {len(h_ft) - 1} layers")
        stats = stats or [_CKAStats() for _ in h_pre]
        keep = None if mask is None else mask.bool()
        for s, a, b in zip(stats, h_pre, h_ft, strict=True):
            s.update(_flat(a, keep), _flat(b, keep))
    if stats is None:
        raise ValueError("layer_cka: no batches")
    names = ["embed"] + [f"layer {i}" for i in range(len(stats) - 1)]
    return [{"name": name, "cka": s.value()} for name, s in zip(names, stats, strict=True)]


def layer_cka(pretrained: nn.Module, finetuned: nn.Module, batches: list[torch.Tensor],
              pad_mask: list[torch.Tensor] | None = None) -> list[dict]:
    """[{"name", "cka"}] per layer ("embed", "layer 0" ..) between the two models' hidden states.

    `batches` are (B,T) ids fed to both models; `pad_mask` (same shapes, 1 = real token)
    picks the positions that count. Statistics accumulate over all batches.
    """
    if pad_mask is not None and len(pad_mask) != len(batches):
        raise ValueError(f"layer_cka: {len(batches)} batches but {len(pad_mask)} pad masks")
    masks = pad_mask if pad_mask is not None else [None] * len(batches)
    return _cka_rows(pretrained, finetuned, batches, batches, masks)


# --- attention ----------------------------------------------------------------


def _check_attention_args(core: nn.Module, input_ids: torch.Tensor, layer: int, head: int) -> int:
    """Validate the arguments of `attention_map`; return the non-negative layer index."""
    if not isinstance(core, TransferGenLM):
        raise TypeError(f"attention_map needs a TransferGenLM, got {type(core).__name__}")
    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise ValueError(f"attention_map takes (1,T) ids, got shape {tuple(input_ids.shape)}")
    n_layer, n_head = core.shape.n_layer, core.shape.n_head
    index = layer + n_layer if layer < 0 else layer
    if not 0 <= index < n_layer:
        raise ValueError(f"layer {layer} out of range for {n_layer} layers")
    if not 0 <= head < n_head:
        raise ValueError(f"head {head} out of range for {n_head} heads")
    return index


def attention_map(model: nn.Module, input_ids: torch.Tensor, layer: int = -1, head: int = 0) -> torch.Tensor:
    """(1,T) ids -> (T,T) causal attention probabilities of one layer and head (rows sum to 1)."""
    core = unwrap(model)
    index = _check_attention_args(core, input_ids, layer, head)
    with _inference(model):
        ids = input_ids.to(next(core.parameters()).device)
        block = core.model.layers[index]
        attn = block.self_attn
        x = block.input_layernorm(_own_states(core, ids, index)[-1])  # (1,T,d): the layer's attention input
        T, hd = ids.shape[1], attn.head_dim
        q, k, _ = attn.qkv(x, *core.model.rotary_emb(T, dtype=x.dtype))  # q (1,H,T,hd), k (1,KV,T,hd)
        k = repeat_kv(k, attn.n_head // attn.n_kv_head)  # the K/V head each query head reads
        q, k = q[0, head].float(), k[0, head].float()  # (T,hd)
        scores = q @ k.T / math.sqrt(hd)  # (T,T), SDPA's default scale
        future = torch.ones(T, T, dtype=torch.bool, device=scores.device).triu(1)
        return scores.masked_fill(future, float("-inf")).softmax(dim=-1)


# --- report -------------------------------------------------------------------


def _embedding_rows(model: nn.Module) -> int:
    """How many token ids the model can embed."""
    core = unwrap(model)
    if isinstance(core, TransferGenLM):
        return core.model.embed_tokens.weight.shape[0]
    hf = core.hf if isinstance(core, HFCausalLM) else core
    return hf.get_input_embeddings().weight.shape[0]


def _pad_batches(rows: list[list[int]], pad_id: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Consecutive rows in batches of `_REPORT_BATCH`, right-padded: ids (B,T) and masks (B,T)."""
    batches, masks = [], []
    for start in range(0, len(rows), _REPORT_BATCH):
        chunk = rows[start:start + _REPORT_BATCH]
        T = max(map(len, chunk))
        batches.append(torch.tensor([r + [pad_id] * (T - len(r)) for r in chunk]))
        masks.append(torch.tensor([[1] * len(r) + [0] * (T - len(r)) for r in chunk]))
    return batches, masks


def layer_report(pretrained_dir: str, finetuned_dir: str, texts: list[str], max_tokens: int = 128,
                 device: torch.device | str | None = None) -> dict:
    """{"weight_change": [...], "cka": [...]} for two saved model folders, JSON-serialisable,
    computed on `device` (None: the CPU).

    Texts are encoded with the fine-tuned folder's tokenizer as [bos] + ids, cut to
    min(max_tokens, max_seq_len). Ids the pretrained model cannot embed (a grown
    vocabulary) are fed to it as pad, and a "note" says how many.
    """
    from ..hub import load_model
    from ..tokenizer import TextTokenizer

    if not texts:
        raise ValueError("layer_report: no texts")
    pre, ft = load_model(pretrained_dir, device=device), load_model(finetuned_dir, device=device)
    tok = TextTokenizer.load(finetuned_dir)
    limit = min(n for n in (max_tokens, pre.max_seq_len, ft.max_seq_len) if n is not None)
    if limit < 1:
        raise ValueError(f"layer_report: max_tokens must be positive, got {max_tokens}")
    rows = [([tok.bos_id, *tok.encode(text)])[:limit] for text in texts]
    batches, masks = _pad_batches(rows, tok.pad_id)
    vocab = _embedding_rows(pre)
    pre_batches = [b.masked_fill(b >= vocab, tok.pad_id) for b in batches]
    unknown = sum(int(((b >= vocab) & m.bool()).sum()) for b, m in zip(batches, masks, strict=True))
    report = {"weight_change": weight_change(pre, ft), "cka": _cka_rows(pre, ft, pre_batches, batches, masks)}
    if unknown:
        report["note"] = (f"{unknown} token(s) have ids beyond the pretrained model's {vocab} embeddings "
                          f"and were fed to it as pad")
    return report


def format_layers(report: dict) -> list[str]:
    """`layer_report`'s numbers as a Markdown table: layer, relative weight change, CKA."""
    cka = {c["name"]: c["cka"] for c in report["cka"]}
    return ["| layer | relative weight change | CKA |", "|---|---:|---:|",
            *(f"| {w['name']} | {w['relative_change']:.4f} | {cka.get(w['name'], float('nan')):.3f} |"
              for w in report["weight_change"])]
