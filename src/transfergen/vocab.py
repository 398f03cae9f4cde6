"""Vocabulary extension: learn new tokens on the target corpus, add them, grow the embeddings.

When the target text needs tokens the pretrained tokenizer lacks (a new script, domain
words), byte-level BPE still encodes it, but badly: a Chinese character becomes 2-3 byte
tokens and a rare English word many short pieces. `extend_vocabulary`:

1. `learn_new_tokens`: trains a BPE on the target docs (same pre-tokenizer, jieba mode
   kept) for candidates, drops strings the old vocab already has as one token, and picks
   the N that save most tokens on the target (lazy greedy, see `_greedy_select`).
2. `add_tokens`: adds them as ordinary (non-special) added tokens of the HF tokenizer.
   Added tokens are matched in the raw text before pre-tokenization, so they work for
   leading-space words (" photosynthesis") and CJK words alike, need no merges (so no
   unreadable byte-level intermediates) and reload with plain `AutoTokenizer`.
   One catch: the ByteLevel decoder decodes an added token as bytes when every one of its
   characters is in the 256-char byte alphabet, which garbles e.g. "café" (but not
   " café": the space is outside the alphabet). Such strings are never learned and
   `add_tokens` refuses them, so `decode(encode(x)) == x` keeps holding.
3. `init_rows_from_pieces` + `resize_embeddings`: each new row is the mean of the old
   embedding rows of the pieces the old tokenizer split the string into, so a new token
   starts where the model already "reads" that string; the tied head grows with it.

`tokenizer_stats` measures fertility and the unknown-byte rate before and after.
"""

from __future__ import annotations

import copy
import dataclasses
import heapq
import inspect
import json
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from functools import cache

import numpy as np
import torch
import torch.nn as nn
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from .errors import UserError
from .model import HFCausalLM, TransferGenLM, unwrap
from .tokenizer import SPECIAL_TOKENS, TextTokenizer, jieba_pieces

# Words for fertility: one CJK character, or a run of non-space, non-CJK characters.
# Chinese has no spaces, so counting characters is the usual word proxy there.
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"  # as in tokenizer.py
_WORD = re.compile(f"[{_CJK}]|[^\\s{_CJK}]+")
_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_SHOWN = 20  # new tokens listed in the report


@cache
def _byte_decoder() -> dict[str, int]:
    """GPT-2 byte-level alphabet, char -> byte: printable bytes stand for themselves, the
    other 68 are shifted to U+0100 and up (in byte order) so every token is printable."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = [b for b in range(256) if b not in keep]
    table = {chr(b): b for b in keep}
    table.update({chr(256 + k): b for k, b in enumerate(shifted)})
    return table


def _is_byte_level(backend: Tokenizer) -> bool:
    """True when the tokenizer's decoder (alone or in a sequence) is ByteLevel."""
    return '"ByteLevel"' in json.dumps(json.loads(backend.to_str()).get("decoder"))


def _symbol_bytes(symbol: str, byte_level: bool) -> bytes:
    """Raw bytes of one model token (not an added token)."""
    table = _byte_decoder()
    if byte_level and all(c in table for c in symbol):
        return bytes(table[c] for c in symbol)
    m = _BYTE_FALLBACK.fullmatch(symbol)  # SentencePiece-style byte fallback
    if m:
        return bytes([int(m.group(1), 16)])
    return symbol.replace("\u2581", " ").encode("utf-8")  # Metaspace marks spaces with ▁


def _decodes_safely(text: str) -> bool:
    """Whether the ByteLevel decoder returns `text` for an added token with this content."""
    table = _byte_decoder()
    if not all(c in table for c in text):
        return True  # the decoder falls back to the content's own UTF-8
    return bytes(table[c] for c in text) == text.encode("utf-8")


def _token_lengths(tok: TextTokenizer) -> np.ndarray:
    """(V,) byte length of every id; -1 where the bytes are not valid UTF-8 on their own."""
    backend = tok.hf.backend_tokenizer
    byte_level = _is_byte_level(backend)
    added = {i: t.content for i, t in tok.hf.added_tokens_decoder.items()}
    out = np.zeros(tok.vocab_size, dtype=np.int64)
    for symbol, i in backend.get_vocab(with_added_tokens=True).items():
        raw = added[i].encode("utf-8") if i in added else _symbol_bytes(symbol, byte_level)
        try:
            raw.decode("utf-8")
            out[i] = len(raw)
        except UnicodeDecodeError:
            out[i] = -len(raw)  # sign marks a byte-fallback piece; abs() is the length
    return out


def _split_chars(doc: str, ids: list[int], lengths: np.ndarray) -> int:
    """How many characters of `doc` have their UTF-8 bytes split across tokens."""
    tok_ends = np.cumsum(np.abs(lengths[ids]))  # (T,) byte offset after each token
    char_ends = np.cumsum([len(c.encode("utf-8")) for c in doc])  # (C,)
    if len(tok_ends) == 0 or tok_ends[-1] != (char_ends[-1] if len(char_ends) else 0):
        # A normalizer changed the text, so offsets do not line up: count the
        # fallback pieces instead (an upper bound on the split characters).
        return int(np.sum(lengths[ids] < 0))
    char_starts = np.concatenate([[0], char_ends[:-1]])
    # A token boundary strictly inside a character's byte span splits that character.
    inside = np.searchsorted(tok_ends, char_ends, "left") - np.searchsorted(tok_ends, char_starts, "right")
    return int(np.sum(inside > 0))


def tokenizer_stats(tok: TextTokenizer, docs: Sequence[str]) -> dict:
    """Fertility and unknown-byte rate of `tok` on `docs`.

    Words: each CJK character is one word; elsewhere a word is a run of non-space
    characters (so "data," is one word). The unknown-byte rate is the share of characters
    whose UTF-8 bytes end up split across byte-fallback tokens (tokens that are not valid
    UTF-8 on their own): byte-level BPE never emits <unk>, this is its "unknown".
    """
    docs = [d for d in docs if d]
    lengths = _token_lengths(tok)
    encoded = tok.encode_batch(docs)
    n_tokens = sum(len(ids) for ids in encoded)
    n_chars = sum(len(d) for d in docs)
    n_words = sum(len(_WORD.findall(d)) for d in docs)
    n_unknown = sum(_split_chars(d, ids, lengths) for d, ids in zip(docs, encoded, strict=True))
    return {
        "n_docs": len(docs), "n_tokens": n_tokens, "n_chars": n_chars, "n_words": n_words,
        "tokens_per_char": n_tokens / max(n_chars, 1), "tokens_per_word": n_tokens / max(n_words, 1),
        "unknown_chars": n_unknown, "unknown_byte_rate": n_unknown / max(n_chars, 1),
    }


# ---------------------------------------------------------------------------
# learning new tokens


def _pretokens(tok: TextTokenizer, docs: Sequence[str]) -> Counter:
    """Counts of the pre-tokens (as text) `tok` would cut `docs` into, jieba pieces included."""
    pre = tok.hf.backend_tokenizer.pre_tokenizer
    words: Counter = Counter()
    for doc in docs:
        for piece in (jieba_pieces(doc) if tok.jieba else [doc]):
            if pre is None:
                words[piece] += 1
                continue
            # ByteLevel splits on whole characters, so each symbol decodes cleanly.
            for symbol, _ in pre.pre_tokenize_str(piece):
                words[_symbol_bytes(symbol, True).decode("utf-8", errors="replace")] += 1
    return words


def _candidates(tok: TextTokenizer, docs: Sequence[str], n: int) -> list[str]:
    """Readable strings from a byte-level BPE trained on `docs` with `tok`'s pre-tokenizer,
    plus every single character of `docs`.

    Byte-level BPE on CJK often merges bytes across character boundaries, so a character
    (e.g. "昨") may never be a whole token of the target BPE; offering each character
    directly lets the greedy step fix the unknown-byte rate where longer tokens do not.
    """
    target = Tokenizer(models.BPE())
    target.pre_tokenizer = tok.hf.backend_tokenizer.pre_tokenizer
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    # A pool of >= 4x the request leaves room for the greedy step to skip overlapping ones;
    # the 1000 floor makes small requests rank the same pool (a prefix of larger ones).
    trainer = trainers.BpeTrainer(vocab_size=len(alphabet) + len(SPECIAL_TOKENS) + max(4 * n, 1000),
                                  min_frequency=2, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=alphabet, show_progress=False)
    feed = (jieba_pieces(d) if tok.jieba else d for d in docs)
    target.train_from_iterator(feed, trainer)
    specials = set(SPECIAL_TOKENS) | set(tok.hf.all_special_tokens)
    out = {c for d in docs for c in d if _decodes_safely(c)}
    for symbol in target.get_vocab():
        try:
            text = _symbol_bytes(symbol, True).decode("utf-8")
        except UnicodeDecodeError:
            continue  # a partial character: not a string one can add
        if text and _decodes_safely(text):
            out.add(text)
    return sorted(out - specials)  # get_vocab order is arbitrary; sort for reproducible ties


def _greedy_select(words: Counter, gain: dict[str, int], n: int) -> list[str]:
    """Pick up to `n` candidates by tokens saved on `words`, lazily re-scored.

    saved(c) = occurrences of c in the text not yet covered by picked tokens x gain[c],
    where gain = old-tokenizer length - 1. Picking c cuts the words at its occurrences, so
    scores only fall; a popped stale score is refreshed and pushed back until it stays
    on top (lazy greedy), which avoids re-scoring every candidate after every pick.
    """
    longest = max(len(c) for c in gain)
    holders: dict[str, list[str]] = defaultdict(list)  # candidate -> words containing it
    for w in words:
        found = {w[i:j] for i in range(len(w)) for j in range(i + 1, min(len(w), i + longest) + 1)}
        for c in found & gain.keys():
            holders[c].append(w)
    pieces = {w: [w] for w in words}  # uncovered parts of each word

    def saved(c: str) -> int:
        return gain[c] * sum(words[w] * sum(p.count(c) for p in pieces[w]) for w in holders[c])

    heap = [(-saved(c), c) for c in holders]
    heapq.heapify(heap)
    picked: list[str] = []
    while heap and len(picked) < n:
        _, c = heapq.heappop(heap)
        fresh = saved(c)
        if fresh <= 0:
            continue
        if heap and -fresh > heap[0][0]:  # no longer the best: re-queue with its true score
            heapq.heappush(heap, (-fresh, c))
            continue
        picked.append(c)
        for w in holders[c]:
            pieces[w] = [q for p in pieces[w] for q in p.split(c) if q]
    return picked


def learn_new_tokens(tok: TextTokenizer, docs: Sequence[str], n: int) -> list[str]:
    """The up-to-`n` new strings that save most tokens on `docs`, most useful first."""
    if not _is_byte_level(tok.hf.backend_tokenizer):
        raise UserError("vocab.add needs a byte-level BPE tokenizer (like transfergen's or GPT-2's)")
    docs = [d for d in docs if d]
    if n <= 0 or not docs:
        return []
    cands = _candidates(tok, docs, n)
    old_lens = [len(ids) for ids in tok.encode_batch(cands)] if cands else []
    # Strings the old vocab already has as one token save nothing.
    gain = {c: k - 1 for c, k in zip(cands, old_lens, strict=True) if k > 1}
    return _greedy_select(_pretokens(tok, docs), gain, n) if gain else []


# ---------------------------------------------------------------------------
# tokenizer and model surgery


def add_tokens(tok: TextTokenizer, new_tokens: Sequence[str]) -> TextTokenizer:
    """A copy of `tok` with `new_tokens` added (ids len(tok) .. len(tok)+n-1, in order)."""
    from transformers import AddedToken

    bad = [t for t in new_tokens if not t or not _decodes_safely(t)]
    if bad:
        raise UserError(f"cannot add token {bad[0]!r}: the byte-level decoder would not "
                        "return it (add it with a leading space instead)")
    fresh = [t for t in dict.fromkeys(new_tokens) if len(tok.encode(t)) != 1]
    hf = copy.deepcopy(tok.hf)
    # normalized=True: matched against normalized text, where the learned strings came from.
    hf.add_tokens([AddedToken(t, normalized=True, special=False) for t in fresh])
    ids = hf.convert_tokens_to_ids(fresh)
    if ids != list(range(tok.vocab_size, tok.vocab_size + len(fresh))):
        raise UserError("added tokens did not get consecutive ids after the old vocabulary")
    return TextTokenizer(hf, jieba=tok.jieba, task_format=tok.task_format)


def _embedding(model: nn.Module) -> torch.Tensor:
    """The (V, d) input embedding weight of a TransferGenLM or HFCausalLM."""
    model = unwrap(model)
    if isinstance(model, TransferGenLM):
        return model.model.embed_tokens.weight
    if isinstance(model, HFCausalLM):
        return model.hf.get_input_embeddings().weight
    raise TypeError(f"cannot resize embeddings of {type(model).__name__}")


@torch.no_grad()
def init_rows_from_pieces(old_tok: TextTokenizer, model: nn.Module,
                          new_tokens: Sequence[str]) -> torch.Tensor:
    """(n_new, d): row k = mean of the old embedding rows of old_tok.encode(new_tokens[k])."""
    weight = _embedding(model)  # (V, d)
    rows = []
    for text, ids in zip(new_tokens, old_tok.encode_batch(list(new_tokens)), strict=True):
        if not ids or max(ids) >= weight.shape[0]:
            raise UserError(f"token {text!r} has pieces outside the model's {weight.shape[0]} "
                            "embedding rows (tokenizer and model do not match)")
        rows.append(weight[ids].float().mean(dim=0))  # (k, d) -> (d,)
    return torch.stack(rows).to(weight.dtype) if rows else weight.new_zeros(0, weight.shape[1])


_NO_MEAN_INIT = {"mean_resizing": False}


def _has_mean_init(hf: nn.Module) -> bool:
    """Whether this transformers' resize_token_embeddings takes `mean_resizing` (>= 4.46)."""
    return "mean_resizing" in inspect.signature(hf.resize_token_embeddings).parameters


@torch.no_grad()
def resize_embeddings(model: nn.Module, new_rows: torch.Tensor) -> nn.Module:
    """Append `new_rows` (n_new, d) to the input embedding; the tied head grows with it.

    The embedding Parameter is replaced, so build the optimizer after this. An untied
    HF head gets the mean of its old rows for the new ids (logits start neutral).
    """
    inner = unwrap(model)
    old = _embedding(inner)
    n_old, n_new = old.shape[0], new_rows.shape[0]
    rows = new_rows.to(device=old.device, dtype=old.dtype)
    if isinstance(inner, TransferGenLM):
        emb = nn.Embedding(n_old + n_new, old.shape[1], device=old.device, dtype=old.dtype)
        emb.weight.copy_(torch.cat([old, rows]))  # (V+n, d)
        emb.weight.requires_grad_(old.requires_grad)
        emb.train(inner.training)
        inner.model.embed_tokens = emb
        # meta: the head's own (V+n, d) init would be thrown away by the re-tie anyway.
        inner.lm_head = nn.Linear(old.shape[1], n_old + n_new, bias=False, device="meta")
        inner.lm_head.weight = emb.weight  # re-tie: one Parameter, as in __init__
        inner.shape = dataclasses.replace(inner.shape, vocab_size=n_old + n_new)
    else:
        hf = inner.hf
        # The new rows are overwritten below: skip transformers' mean init (>= 4.46) where it has one.
        hf.resize_token_embeddings(n_old + n_new, **_NO_MEAN_INIT if _has_mean_init(hf) else {})
        hf.get_input_embeddings().weight[n_old:] = rows
        head = hf.get_output_embeddings()
        if head is not None and head.weight is not hf.get_input_embeddings().weight:
            # Untied head: start new logits from the mean of the old output rows instead.
            head.weight[n_old:] = head.weight[:n_old].mean(dim=0)
    return model


def extend_vocabulary(tok: TextTokenizer, model: nn.Module, docs: Sequence[str],
                      n: int) -> tuple[TextTokenizer, nn.Module, dict]:
    """Learn up to `n` new tokens on `docs`, add them, grow `model`; returns a report too."""
    if n <= 0:
        raise UserError(f"vocab.add must be a positive number of tokens, got {n}")
    docs = [d for d in docs if d and d.strip()]
    if not docs:
        raise UserError("vocab.extend_from: no documents to learn new tokens from")
    rows_before = _embedding(model).shape[0]
    if rows_before != tok.vocab_size:
        raise UserError(f"model has {rows_before} embedding rows but the tokenizer has "
                        f"{tok.vocab_size} ids; vocab.add needs them equal")
    before = tokenizer_stats(tok, docs)
    learned = learn_new_tokens(tok, docs, n)
    new_tok = add_tokens(tok, learned)
    added = new_tok.hf.convert_ids_to_tokens(list(range(tok.vocab_size, new_tok.vocab_size)))
    model = resize_embeddings(model, init_rows_from_pieces(tok, model, added))
    report = {
        "n_requested": n, "n_added": len(added), "new_tokens": learned[:_SHOWN],
        "vocab_size_before": tok.vocab_size, "vocab_size_after": new_tok.vocab_size,
        "before": before, "after": tokenizer_stats(new_tok, docs),
    }
    if len(added) < n:
        report["note"] = f"only {len(added)} of vocab.add={n} candidate tokens save any tokens"
    return new_tok, model, report
