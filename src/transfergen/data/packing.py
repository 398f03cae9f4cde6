"""Tokenize a corpus once into flat token files, then sample fixed-length blocks.

Layout under the cache folder:

    train.bin / val.bin   flat arrays of uint16 (uint32 for vocabularies > 65535):
                          [bos] doc0 [eos] [bos] doc1 [eos] ...
    meta.json             key, dtype, token/document counts, how val was split
    .lock                 taken by the process that reads or builds the cache (`folders.py`)

Documents are streamed in chunks through a process pool and appended to the files as
they come back, so the corpus never sits in RAM. Files are written under temporary
names (`.build-*`) and moved into place at the end, and meta.json is written last: a
killed run never leaves a cache that looks valid. The cache is reused only when the key
(corpus files' paths/sizes/mtimes, data options, tokenizer fingerprint) matches. One
process at a time reads or builds a cache folder (`FolderLock`, waiting for the other),
so the `.build-*` left by a killed build are removed at the next start, and a full disk
stops with one line, its partial build removed.

This module imports no torch: spawned tokenizer workers import it, and torch would add
seconds to each worker's start. Reading blocks out of the cache is `sampling.py`.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing as mp
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from ..checks import check_values
from ..config import DataConfig
from ..errors import UserError, write_problem
from ..folders import FolderLock, ensure_out_dir, remove_stale
from ..tokenizer import TextTokenizer, encode_texts, load_backend
from .decontaminate import Decontaminated, HeldOut, digest, held_out_ngrams, held_out_texts
from .packaged import corpus_file
from .readers import iter_documents

CHUNK_DOCS = 512  # documents per worker task: big enough to amortize pickling
CACHE_VERSION = 1


@dataclass
class TokenSplits:
    """The tokenized corpus: read-only memory-mapped train/val token streams."""

    train: np.ndarray
    val: np.ndarray
    train_path: Path
    val_path: Path
    n_docs: int
    n_train_docs: int
    n_val_docs: int
    cached: bool
    n_excluded_docs: int = 0  # left out by data.exclude


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (halves disk and page-cache use), else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 65535 else np.uint32)


def is_val_doc(i: int, val_fraction: float) -> bool:
    """Deterministic per-document split: Knuth's multiplicative hash of i+1 in [0, 1)."""
    # i+1 so document 0 is not always in val (0 * k == 0 < any fraction).
    return ((i + 1) * 2654435761) % 2**32 / 2**32 < val_fraction


def cache_key(data: DataConfig, tokenizer: TextTokenizer) -> str:
    """sha256 over the corpus files' identity and every option that changes the tokens."""
    files = []
    for p in data.corpus:
        path = corpus_file(p).resolve()
        if not path.exists():
            raise UserError("file not found", path=str(p))
        # A datasets folder is identified by every file in it (its Arrow shards, its index).
        members = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
        for f in members:
            st = f.stat()
            files.append([str(f), st.st_size, st.st_mtime_ns])
    blob = {"version": CACHE_VERSION, "files": files, "format": data.format,
            "text_field": data.text_field, "doc_sep": data.doc_sep,
            "val_fraction": data.val_fraction, "tokenizer": tokenizer.fingerprint()}
    if data.exclude:  # what is held out, not where it came from: the same text gives the same cache
        blob["exclude"] = digest(held_out_texts(tuple(data.exclude)))
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------
# tokenizer workers (module-level so 'spawn' can pickle them by name)

_worker: dict[str, Any] = {}


def _init_worker(tok_dir: str, bos: int, eos: int, dtype: str) -> None:
    """Pool initializer: load the tokenizer once per process from its saved folder."""
    # Rust-side threads inside each of N worker processes would oversubscribe the cores.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        backend, jieba = load_backend(tok_dir)
    except Exception as exc:  # noqa: BLE001 - an initializer that raises makes Pool respawn it forever
        _worker["error"] = f"tokenizer worker could not load {tok_dir}: {exc}"
        return
    _worker.update(backend=backend, jieba=jieba, bos=bos, eos=eos, dtype=np.dtype(dtype))


def _with_bos_eos(ids_list: list[list[int]], bos: int, eos: int, dtype: np.dtype) -> list[np.ndarray]:
    """Each document's ids -> array [bos] + ids + [eos]."""
    out = []
    for ids in ids_list:
        arr = np.empty(len(ids) + 2, dtype=dtype)
        arr[0], arr[1:-1], arr[-1] = bos, ids, eos
        out.append(arr)
    return out


def _encode_chunk(docs: list[str]) -> list[np.ndarray]:
    """Worker task: encode one chunk of documents with the process's tokenizer."""
    w = _worker
    if "error" in w:
        raise RuntimeError(w["error"])
    return _with_bos_eos(encode_texts(w["backend"], docs, w["jieba"]), w["bos"], w["eos"], w["dtype"])


def _chunks(docs: Iterator[str], size: int) -> Iterator[list[str]]:
    while chunk := list(islice(docs, size)):
        yield chunk


def _encoded_chunks(docs: Iterator[str], tokenizer: TextTokenizer, dtype: np.dtype,
                    num_workers: int, tmp_dir: Path) -> Iterator[list[np.ndarray]]:
    """Encoded chunks in corpus order, in-process or through a spawn pool."""
    bos, eos = tokenizer.bos_id, tokenizer.eos_id
    if num_workers <= 1:
        for chunk in _chunks(docs, CHUNK_DOCS):
            yield _with_bos_eos(tokenizer.encode_batch(chunk), bos, eos, dtype)
        return
    tok_dir = tmp_dir / "tokenizer"
    tokenizer.save(tok_dir)
    # 'spawn': forking a parent that already runs torch/tokenizers threads can deadlock.
    ctx = mp.get_context("spawn")
    with ctx.Pool(num_workers, _init_worker, (str(tok_dir), bos, eos, dtype.str)) as pool:
        # Not pool.imap: its feeder thread drains the whole input iterator into the task
        # queue, i.e. the corpus into RAM. A bounded FIFO of async results keeps the
        # order with at most 2 chunks in flight per worker.
        pending: deque = deque()
        for chunk in _chunks(docs, CHUNK_DOCS):
            pending.append(pool.apply_async(_encode_chunk, (chunk,)))
            if len(pending) >= 2 * num_workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


# ---------------------------------------------------------------------------
# building and reusing the cache


def _open_tokens(path: Path, dtype: np.dtype, n: int) -> np.ndarray:
    """Read-only memmap of `n` tokens (mmap cannot map an empty file, hence the guard)."""
    if n == 0:
        arr = np.zeros(0, dtype=dtype)
        arr.flags.writeable = False
        return arr
    return np.memmap(path, dtype=dtype, mode="r", shape=(n,))


def _load_cached(cache: Path, key: str) -> TokenSplits | None:
    """The cached splits if meta.json matches `key` and the files are intact, else None."""
    try:
        meta = json.loads((cache / "meta.json").read_text(encoding="utf-8"))
        if meta.get("key") != key:
            return None
        dtype = np.dtype(meta["dtype"])
        sizes = {"train": meta["n_train_tokens"], "val": meta["n_val_tokens"]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # unreadable or foreign meta: rebuild rather than trust it
    train_path, val_path = cache / "train.bin", cache / "val.bin"
    for path, n in ((train_path, sizes["train"]), (val_path, sizes["val"])):
        if not path.is_file() or path.stat().st_size != n * dtype.itemsize:
            return None
    return TokenSplits(_open_tokens(train_path, dtype, meta["n_train_tokens"]),
                       _open_tokens(val_path, dtype, meta["n_val_tokens"]),
                       train_path, val_path, meta["n_docs"], meta["n_train_docs"],
                       meta["n_val_docs"], cached=True, n_excluded_docs=meta.get("n_excluded_docs", 0))


def pretraining_documents(data: DataConfig) -> Decontaminated:
    """The corpus' documents minus those sharing text with `data.exclude` tasks' val/test
    splits (the tokenizer and the token cache both read exactly these)."""
    docs = iter_documents(data.corpus, data.format, data.text_field, data.doc_sep)
    held = held_out_ngrams(held_out_texts(tuple(data.exclude))) if data.exclude else HeldOut()
    return Decontaminated(docs, held)


def _write_streams(data: DataConfig, tokenizer: TextTokenizer, dtype: np.dtype,
                   tmp: Path) -> dict[str, int]:
    """Tokenize the corpus into tmp/train.bin and tmp/val.bin; return the counts."""
    kept = pretraining_documents(data)
    docs = iter(kept)
    counts = dict(n_docs=0, n_train_docs=0, n_val_docs=0, n_train_tokens=0, n_val_tokens=0)
    with open(tmp / "train.bin", "wb") as ftrain, open(tmp / "val.bin", "wb") as fval:
        for arrays in _encoded_chunks(docs, tokenizer, dtype, data.num_workers, tmp):
            parts: dict[str, list[np.ndarray]] = {"train": [], "val": []}
            for arr in arrays:
                split = "val" if is_val_doc(counts["n_docs"], data.val_fraction) else "train"
                parts[split].append(arr)
                counts["n_docs"] += 1
                counts[f"n_{split}_docs"] += 1
                counts[f"n_{split}_tokens"] += len(arr)
            for split, fh in (("train", ftrain), ("val", fval)):
                if parts[split]:
                    fh.write(np.concatenate(parts[split]).tobytes())
    counts["n_excluded_docs"] = kept.dropped
    return counts


def _tail_split(tmp: Path, counts: dict[str, int], dtype: np.dtype, val_fraction: float) -> None:
    """Fallback when one split got no document: val = the last val_fraction of the stream."""
    # Exactly one file holds the whole stream, in document order.
    src = "train" if counts["n_train_tokens"] else "val"
    n = counts[f"n_{src}_tokens"]
    n_val = min(max(1, math.ceil(val_fraction * n)), n - 1)
    whole = tmp / f"{src}.bin"
    if src == "val":  # everything landed in val: it becomes the train file
        os.replace(whole, tmp / "train.bin")
        whole = tmp / "train.bin"
    stream = np.memmap(whole, dtype=dtype, mode="r", shape=(n,))
    with open(tmp / "val.bin", "wb") as fval:
        for start in range(n - n_val, n, 1 << 20):  # copy in 1M-token slices
            fval.write(np.asarray(stream[start:min(start + (1 << 20), n)]).tobytes())
    del stream
    os.truncate(whole, (n - n_val) * dtype.itemsize)
    counts.update(n_train_tokens=n - n_val, n_val_tokens=n_val,
                  n_train_docs=counts["n_docs"], n_val_docs=0)


def _write_streams_or_fail(data: DataConfig, tokenizer: TextTokenizer, dtype: np.dtype, tmp: Path,
                           cache: Path) -> dict[str, int]:
    """`_write_streams`, with a failed write (a full disk) as one line."""
    try:
        return _write_streams(data, tokenizer, dtype, tmp)
    except OSError as exc:
        raise UserError(f"could not build the token cache: {write_problem(exc, cache)}; free space and run "
                        "again (the partial build is removed)", path=str(cache)) from None


def _build_cache(data: DataConfig, tokenizer: TextTokenizer, cache: Path, key: str) -> None:
    """Tokenize into a temp folder, then move the files into place, meta.json last."""
    cache.mkdir(parents=True, exist_ok=True)
    # Drop the old meta first: old meta + half-replaced .bin files must never look valid.
    (cache / "meta.json").unlink(missing_ok=True)
    dtype = token_dtype(tokenizer.vocab_size)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=cache))
    try:
        counts = _write_streams_or_fail(data, tokenizer, dtype, tmp, cache)
        if counts["n_docs"] == 0:
            raise UserError(f"corpus is empty: no non-empty documents in {', '.join(data.corpus)}")
        val_split = "by_document"
        if data.val_fraction > 0 and (counts["n_val_tokens"] == 0 or counts["n_train_tokens"] == 0):
            _tail_split(tmp, counts, dtype, data.val_fraction)
            val_split = "token_tail_fallback"
        for name in ("train.bin", "val.bin"):
            os.replace(tmp / name, cache / name)
        meta = dict(key=key, version=CACHE_VERSION, dtype=dtype.name, val_split=val_split,
                    vocab_size=tokenizer.vocab_size, bos_id=tokenizer.bos_id,
                    eos_id=tokenizer.eos_id, **counts)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp / "meta.json", cache / "meta.json")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def prepare_corpus(data: DataConfig, tokenizer: TextTokenizer, cache_dir: str | Path) -> TokenSplits:
    """Tokenize `data.corpus` into `cache_dir` (or reuse a matching cache) and map it."""
    if not data.corpus:
        raise UserError("no corpus given (set data.corpus to one or more files)")
    check_values(data, "data.")
    cache = ensure_out_dir(cache_dir, "data.cache_dir")
    key = cache_key(data, tokenizer)
    with FolderLock(cache, "token cache", wait=True):  # ranks and runs sharing a cache take turns
        remove_stale(cache, (".build-*",))  # a killed build's leftovers: no live writer holds them now
        found = _load_cached(cache, key)
        if found is not None:
            return found
        _build_cache(data, tokenizer, cache, key)
        splits = _load_cached(cache, key)
    assert splits is not None, "freshly written token cache failed to load"
    splits.cached = False
    return splits
