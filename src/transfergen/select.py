"""`transfergen select`: pick the documents of a general corpus that look like the target.

    cross-entropy-difference (default; Moore & Lewis 2010)
        score(d) = H_in(d) - H_general(d), two word-bigram models (`data/ngram.py`): one on
        the target text, one on a random sample of the corpus with as many words; the
        lowest scores are kept.
    random (the control)
        a seeded uniform score: the same amount of text, drawn blindly.

Either method keeps documents in score order until they hold `keep` of the corpus' words
(or `tokens` words), so a random selection of the same `keep` is the same size. Three
passes over the corpus, none holding it in memory: a reservoir sample for the general
model; scoring, `workers` processes segmenting and scoring chunks in order; writing the
kept documents to OUT/selected.jsonl (`{"text": ...}` a line, in corpus order). OUT/
selection.json records the method, both models' sizes and held-out perplexities, the
score distribution and, per corpus file, what was kept. Words are `metrics.tokenize.words`
(jieba for Chinese), the project's one segmentation.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import random
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np

from .checks import at_least, one_of, within
from .config import opt
from .data.ngram import BigramLM, vocabulary
from .data.readers import check_sources, iter_documents
from .errors import UserError
from .folders import FolderLock, ensure_out_dir
from .io import write_json_atomic
from .metrics.tokenize import is_chinese, tokenizer_name, words

METHODS = ("cross-entropy-difference", "random")
CHUNK_DOCS = 256
RESERVOIR = 20_000  # documents the general model's sample is drawn from
HELDOUT_FRACTION = 0.1
MAX_TARGET_DOCS = 200_000


@dataclass
class SelectConfig:
    """What `transfergen select` (and a study base's `select:`) takes; YAML keys mirror these."""

    corpus: list[str] = opt(doc="the general corpus: text / .gz / .jsonl files, or pkg: corpora", factory=list)
    target: str = opt("", "target text: a task YAML (its training sources and targets) or comma-separated files")
    method: str = opt("cross-entropy-difference", "cross-entropy-difference | random", check=one_of(*METHODS))
    keep: float = opt(0.2, "fraction of the corpus' words to keep", check=within(0, 1, low_open=True))
    tokens: int | None = opt(None, "or: words to keep (overrides keep)", check=at_least(1))
    lang: str = opt("auto", "word segmentation: auto (zh when the target has Chinese) | en | zh | ...")
    text_field: str = opt("text", "the JSONL field / table column holding a document")
    format: str = opt("auto", "data format of the corpus files (as data.format)")
    doc_sep: str = opt("line", "line | blank (text files)")
    workers: int = opt(2, "scoring processes", check=at_least(1))
    seed: int = opt(0, "the general sample's and the random method's seed", check=at_least(0))
    min_count: int = opt(2, "in-domain words seen this often form the shared vocabulary", check=at_least(1))


def check_select(cfg: SelectConfig) -> None:
    """Everything checkable before work: corpus files, target, format options."""
    if not cfg.corpus:
        raise UserError("select: no corpus given (--corpus FILE ...)")
    if not cfg.target:
        raise UserError("select: no target given (--target TASK.yaml or FILES)")
    check_sources(cfg.corpus, cfg.format, cfg.doc_sep)
    if not cfg.target.lower().endswith((".yaml", ".yml")):
        check_sources([p.strip() for p in cfg.target.split(",") if p.strip()], "auto", "line")


def _lang(cfg: SelectConfig, target: list[str]) -> str:
    """`lang`, or for auto: zh when a side of the target task (or its text) is Chinese."""
    if cfg.lang != "auto":
        return cfg.lang
    if cfg.target.lower().endswith((".yaml", ".yml")):
        from .data.tasks import load_task_file

        task = load_task_file(cfg.target)
        return "zh" if is_chinese(task.source_lang) or is_chinese(task.target_lang) else task.target_lang
    sample = "".join(target[:1000])
    return "zh" if any("\u4e00" <= c <= "\u9fff" for c in sample) else "en"


def _split(docs: list, seed: int) -> tuple[list, list]:
    """(train, held-out) after a seeded shuffle; the held-out part is 10%, at least one."""
    docs = list(docs)
    random.Random(seed).shuffle(docs)
    n = max(1, int(len(docs) * HELDOUT_FRACTION)) if len(docs) > 1 else 0
    return docs[n:], docs[:n]


def _reservoir(cfg: SelectConfig) -> list[str]:
    """A seeded uniform sample of at most RESERVOIR documents of the corpus (pass 1)."""
    rng, sample = random.Random(cfg.seed), []
    for i, doc in enumerate(iter_documents(cfg.corpus, cfg.format, cfg.text_field, cfg.doc_sep)):
        if len(sample) < RESERVOIR:
            sample.append(doc)
        elif (j := rng.randrange(i + 1)) < RESERVOIR:
            sample[j] = doc
    if not sample:
        raise UserError(f"select: the corpus has no documents ({', '.join(cfg.corpus)})")
    rng.shuffle(sample)
    return sample


def _take_words(docs: Iterator[str], lang: str, n_words: int) -> list[list[str]]:
    """Segmented documents from `docs` until they hold `n_words` words (at least one doc)."""
    out, total = [], 0
    for doc in docs:
        ws = words(doc, lang)
        out.append(ws)
        total += len(ws)
        if total >= n_words:
            break
    return out


def train_models(cfg: SelectConfig, target: list[str], lang: str) -> tuple[BigramLM, BigramLM, dict]:
    """The in-domain and general models on equal word counts, and their held-out perplexities."""
    t_train, t_held = _split([words(d, lang) for d in target], cfg.seed)
    n_train, n_held = sum(map(len, t_train)), sum(map(len, t_held))
    pool = iter(_reservoir(cfg))
    g_train = _take_words(pool, lang, n_train)
    g_held = _take_words(pool, lang, max(n_held, 1))
    vocab = vocabulary(t_train, cfg.min_count)
    lm_in, lm_gen = BigramLM(vocab).fit(t_train), BigramLM(vocab).fit(g_train)
    ppl = {f"{m}_on_{side}": lm.perplexity(docs) for m, lm in (("in_domain", lm_in), ("general", lm_gen))
           for side, docs in (("target_heldout", t_held), ("corpus_heldout", g_held))}
    return lm_in, lm_gen, ppl


# ---------------------------------------------------------------------------
# pass 2: scoring in worker processes (module-level functions: 'spawn' pickles them by name)

_worker: dict = {}


def _init_worker(lang: str, lm_in: BigramLM | None, lm_gen: BigramLM | None) -> None:
    _worker.update(lang=lang, lm_in=lm_in, lm_gen=lm_gen)


def score_chunk(docs: list[str]) -> list[tuple[float, int]]:
    """(H_in - H_general in nats per word, words) per document; inf for a document without words."""
    w, out = _worker, []
    for doc in docs:
        ws = words(doc, w["lang"])
        if not ws:
            out.append((float("inf"), 0))
        elif w["lm_in"] is None:  # random: only the word count is needed
            out.append((0.0, len(ws)))
        else:
            out.append((w["lm_in"].cross_entropy(ws)[0] - w["lm_gen"].cross_entropy(ws)[0], len(ws)))
    return out


def _chunks(docs: Iterator[str]) -> Iterator[list[str]]:
    while chunk := list(islice(docs, CHUNK_DOCS)):
        yield chunk


def _scored(cfg: SelectConfig, docs: Iterator[str], init: tuple) -> Iterator[list[tuple[float, int]]]:
    """Scores of `docs` in order: in this process, or `workers` spawned ones (at most two chunks
    each in flight, so the corpus is never drained into memory)."""
    if cfg.workers <= 1:
        _init_worker(*init)
        yield from (score_chunk(c) for c in _chunks(docs))
        return
    with mp.get_context("spawn").Pool(cfg.workers, _init_worker, init) as pool:
        pending: deque = deque()
        for chunk in _chunks(docs):
            pending.append(pool.apply_async(score_chunk, (chunk,)))
            if len(pending) >= 2 * cfg.workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def score_corpus(cfg: SelectConfig, init: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(score, words, corpus-file index) of every document, in corpus order."""
    scores, n_words, source = [], [], []
    for k, path in enumerate(cfg.corpus):
        for chunk in _scored(cfg, iter_documents([path], cfg.format, cfg.text_field, cfg.doc_sep), init):
            scores += [s for s, _ in chunk]
            n_words += [n for _, n in chunk]
            source += [k] * len(chunk)
    return np.array(scores, dtype=np.float64), np.array(n_words, dtype=np.int64), np.array(source, dtype=np.int32)


def choose(scores: np.ndarray, n_words: np.ndarray, budget: int) -> np.ndarray:
    """Boolean mask: the lowest-scoring documents (ties in corpus order) until they hold
    `budget` words; documents without words are never kept."""
    order = np.argsort(scores, kind="stable")
    order = order[np.isfinite(scores[order])]
    cum = np.cumsum(n_words[order])
    n = int(np.searchsorted(cum, budget, side="left")) + 1  # the document that reaches the budget too
    keep = np.zeros(len(scores), dtype=bool)
    keep[order[:n]] = True
    return keep


def _distribution(scores: np.ndarray, keep: np.ndarray) -> dict:
    """Quantiles and a 20-bin histogram of the finite scores, and the kept documents' worst score."""
    s = scores[np.isfinite(scores)]
    if not len(s):
        return {}
    qs = (0, 1, 5, 25, 50, 75, 95, 99, 100)
    counts, edges = np.histogram(s, bins=20)
    return {"mean": float(s.mean()), "quantiles": {f"p{q}": float(np.percentile(s, q)) for q in qs},
            "threshold": float(scores[keep].max()) if keep.any() else None,
            "kept_mean": float(scores[keep].mean()) if keep.any() else None,
            "histogram": {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}}


def _write_selected(cfg: SelectConfig, keep: np.ndarray, path: Path) -> None:
    """Pass 3: the kept documents, in corpus order, as JSONL; renamed into place when complete."""
    tmp = path.with_name(path.name + ".tmp")
    docs = iter_documents(cfg.corpus, cfg.format, cfg.text_field, cfg.doc_sep)
    with open(tmp, "w", encoding="utf-8") as fh:
        for i, doc in enumerate(docs):
            if keep[i]:
                fh.write(json.dumps({"text": doc}, ensure_ascii=False) + "\n")
    tmp.replace(path)


def _per_source(cfg: SelectConfig, n_words: np.ndarray, source: np.ndarray, keep: np.ndarray) -> list[dict]:
    return [{"corpus": path, "docs": int((source == k).sum()), "words": int(n_words[source == k].sum()),
             "kept_docs": int((keep & (source == k)).sum()), "kept_words": int(n_words[keep & (source == k)].sum())}
            for k, path in enumerate(cfg.corpus)]


def run_select(cfg: SelectConfig, out: str | Path) -> dict:
    """Select per `cfg` into OUT (selected.jsonl, selection.json); returns selection.json's content."""
    from .analysis.domain import load_corpus

    check_select(cfg)
    out = ensure_out_dir(out)
    with FolderLock(out, "selection"):
        t0 = time.perf_counter()
        target = load_corpus(cfg.target, "target", max_docs=MAX_TARGET_DOCS)
        lang = _lang(cfg, target)
        models: dict = {}
        init: tuple = (lang, None, None)
        if cfg.method == "cross-entropy-difference":
            lm_in, lm_gen, ppl = train_models(cfg, target, lang)
            models = {"in_domain": lm_in.size(), "general": lm_gen.size(), "perplexity": ppl}
            init = (lang, lm_in, lm_gen)
        scores, n_words, source = score_corpus(cfg, init)
        if cfg.method == "random":
            rand = np.random.default_rng(cfg.seed).random(len(scores))
            scores = np.where(np.isfinite(scores), rand, np.inf)
        total = int(n_words.sum())
        budget = cfg.tokens or max(1, round(cfg.keep * total))
        keep = choose(scores, n_words, budget)
        _write_selected(cfg, keep, out / "selected.jsonl")
        result = {"method": cfg.method, "lang": lang, "segmentation": tokenizer_name(lang, "jieba"),
                  "target": cfg.target, "target_docs": len(target), "budget_words": budget,
                  "corpus": {"docs": len(scores), "words": total},
                  "kept": {"docs": int(keep.sum()), "words": int(n_words[keep].sum()),
                           "word_fraction": float(n_words[keep].sum() / max(total, 1))},
                  "per_source": _per_source(cfg, n_words, source, keep), "models": models,
                  "scores": _distribution(scores, keep) if cfg.method != "random" else {},
                  "workers": cfg.workers, "seed": cfg.seed, "elapsed_s": round(time.perf_counter() - t0, 1),
                  "selected": str(out / "selected.jsonl")}
        write_json_atomic(out / "selection.json", result)
    return result
