"""Domain mismatch between a pretraining (source) corpus and a target corpus.

`domain_report` compares the two sides' word statistics and, given a tokenizer and a
model, how well the pretrained pieces fit the target:

* vocabulary: how many target word types / tokens the source has seen, the Jaccard index
  of the type sets and the Jensen-Shannon divergence (base 2, so in [0, 1]) of the
  unigram word distributions;
* tokenizer: fertility (subword tokens per word) of each side and the target's
  unknown-byte rate, both from `transfergen.vocab.tokenizer_stats`;
* model: perplexity on a held-out tail of each side;
* the words most characteristic of each side (smoothed log-odds ratio).

Words come from `transfergen.metrics.tokenize.words` (lower-cased; jieba for Chinese).
`load_corpus` reads either side from corpus files, `pkg:` corpora or a task YAML.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from itertools import islice
from typing import TYPE_CHECKING

from ..errors import UserError
from ..metrics.tokenize import is_chinese, words

if TYPE_CHECKING:  # torch only where a model is measured: the report imports format_domain
    import torch

    from ..tokenizer import TextTokenizer

SMOOTHING = 0.5  # add-a prior of the log-odds ratio
MIN_COUNT = 3  # a distinctive word occurs at least this often on its own side
HELDOUT_FRACTION, HELDOUT_MAX = 0.1, 200  # the tail of each side the perplexity is taken on
PPL_SEQ_LEN, PPL_MAX_BLOCKS = 256, 64

STOPWORDS_EN = frozenset("""
a about above after again against all also am an and any are as at be because been before
being below between both but by can can't could did didn't do does doesn't doing don't down
during each either even ever few for from further had has have having he he's her here hers
herself him himself his how i i'm i've if in into is isn't it it's its itself just let's may
me might more most much must my myself neither no nor not now of off on once one only or
other our ours ourselves out over own same shall she she's should so some such than that
that's the their theirs them themselves then there there's these they they're this those
through to too under until up upon us very was we we're were what when where which while who
whom whose why will with won't would you you're your yours yourself yourselves
""".split())

STOPWORDS_ZH = frozenset("""
的 地 得 了 是 在 和 与 及 或 而 着 过 把 被 让 给 对 从 向 为 为了 因为 所以 但 但是 如果 虽然
我 你 他 她 它 们 我们 你们 他们 她们 它们 自己 这 那 这个 那个 这些 那些 这样 那样 有 没有 不
也 就 都 还 又 再 才 只 很 吗 呢 吧 啊 呀 之 其 所 等 以 于 上 下 中 个 一个 要 会 能 可以 什么
怎么 已经 将 并 即
""".split())


def _counts(docs: Sequence[str], lang: str) -> Counter:
    """Word counts of `docs`; `words` already lower-cases and drops punctuation."""
    out: Counter = Counter()
    for doc in docs:
        out.update(words(doc, lang))
    return out


def jensen_shannon(source: Counter, target: Counter) -> float:
    """JSD in bits between the unigram distributions of two count tables.

    Written as the mean KL to the mixture, so it needs no smoothing: every word with
    mass on either side has mass in the mixture. Identical tables give exactly 0
    (p == m in floating point) and disjoint ones exactly 1 (p / m == 2).
    """
    n_s, n_t = sum(source.values()), sum(target.values())
    if not n_s or not n_t:
        return 0.0
    terms = []
    for w in source.keys() | target.keys():
        p, q = source[w] / n_s, target[w] / n_t
        m = (p + q) / 2
        if p:
            terms.append(0.5 * p * math.log2(p / m))
        if q:
            terms.append(0.5 * q * math.log2(q / m))
    return min(max(math.fsum(terms), 0.0), 1.0)


def overlap_stats(source: Counter, target: Counter) -> dict:
    """Type overlap, token coverage and Jaccard index of the two vocabularies."""
    shared = source.keys() & target.keys()
    union = source.keys() | target.keys()
    n_target = sum(target.values())
    return {
        "type_overlap": len(shared) / max(len(target), 1),
        "token_coverage": sum(target[w] for w in shared) / max(n_target, 1),
        "jaccard": len(shared) / max(len(union), 1),
    }


def _is_content(word: str, stop: frozenset) -> bool:
    """A word worth listing: not a stopword and not a bare number or symbol."""
    return word not in stop and any(c.isalpha() for c in word)


def distinctive_words(mine: Counter, other: Counter, top: int, stop: frozenset) -> list[str]:
    """The `top` words over-represented in `mine`, by a smoothed log-odds ratio.

    score = log((c_mine + a) / (N_mine + aV)) - log((c_other + a) / (N_other + aV));
    the prior keeps words unseen on the other side finite, and the count floor keeps
    one-off typos off the list. Ties break on the word, so the list is deterministic.
    """
    a, vocab = SMOOTHING, len(mine.keys() | other.keys())
    n_mine, n_other = sum(mine.values()), sum(other.values())
    scored = []
    for w, c in mine.items():
        if c < MIN_COUNT or not _is_content(w, stop):
            continue
        score = math.log((c + a) / (n_mine + a * vocab)) - math.log((other[w] + a) / (n_other + a * vocab))
        if score > 0:
            scored.append((-score, w))
    return [w for _, w in sorted(scored)[:top]]


def docs_perplexity(model: torch.nn.Module, tok: TextTokenizer, docs: Sequence[str], seq_len: int,
                    max_blocks: int = PPL_MAX_BLOCKS, batch_size: int = 16) -> float:
    """exp(mean next-token loss) on in-memory `docs`, packed like pretraining.

    Docs are framed [bos] doc [eos], concatenated and cut into at most `max_blocks`
    blocks of `seq_len` (so the cost is bounded); text too short for one block is
    scored as one shorter block rather than refused.
    """
    from ..evaluate import block_perplexity

    need = max_blocks * seq_len + 1
    ids: list[int] = []
    for doc in docs:
        ids += [tok.bos_id, *tok.encode(doc), tok.eos_id]
        if len(ids) >= need:
            break  # enough for every block: encoding the rest would be wasted time
    if len(ids) < 2:
        raise UserError("no text to measure perplexity on")
    seq_len = min(seq_len, len(ids) - 1)
    n = min((len(ids) - 1) // seq_len, max_blocks)
    return block_perplexity(model, ids, seq_len, n, batch_size)


def heldout(docs: Sequence[str]) -> list[str]:
    """The last 10% of `docs` (at least one, at most 200)."""
    n = min(HELDOUT_MAX, max(1, int(len(docs) * HELDOUT_FRACTION)))
    return list(docs[-n:])


def _tokenizer_stats(tok: TextTokenizer, source: Sequence[str], target: Sequence[str]) -> dict:
    from ..vocab import tokenizer_stats

    s, t = tokenizer_stats(tok, source), tokenizer_stats(tok, target)
    return {"fertility_source": s["tokens_per_word"], "fertility_target": t["tokens_per_word"],
            "unknown_rate_target": t["unknown_byte_rate"]}


def _model_stats(model: torch.nn.Module, tok: TextTokenizer, source: Sequence[str],
                 target: Sequence[str]) -> dict:
    """Perplexity on held-out text of each side; `source` must be text the model never trained on."""
    seq_len = min(PPL_SEQ_LEN, getattr(model, "max_seq_len", None) or PPL_SEQ_LEN)
    return {"ppl_source": docs_perplexity(model, tok, source, seq_len),
            "ppl_target": docs_perplexity(model, tok, heldout(target), seq_len)}


def domain_report(source_docs: Sequence[str], target_docs: Sequence[str], lang: str = "en",
                  tokenizer: TextTokenizer | None = None, model: torch.nn.Module | None = None,
                  top: int = 15, max_docs: int = 20000, source_heldout: Sequence[str] | None = None) -> dict:
    """How far `target_docs` is from `source_docs` (see the module doc); plain JSON types.

    `source_heldout`: source documents the model did not train on (e.g. the pretraining
    run's validation split) for its source perplexity; default: the last 10% of `source_docs`.
    """
    if model is not None and tokenizer is None:
        raise UserError("a model's perplexity needs its tokenizer too")
    source, target = list(source_docs[:max_docs]), list(target_docs[:max_docs])
    cs, ct = _counts(source, lang), _counts(target, lang)
    stop = STOPWORDS_ZH | STOPWORDS_EN if is_chinese(lang) else STOPWORDS_EN
    report: dict = {
        "lang": lang, "source_docs": len(source), "target_docs": len(target),
        "source_words": sum(cs.values()), "target_words": sum(ct.values()),
        "source_types": len(cs), "target_types": len(ct),
        **overlap_stats(cs, ct), "jsd": jensen_shannon(cs, ct),
    }
    if tokenizer is not None:
        report.update(_tokenizer_stats(tokenizer, source, target))
        if model is not None:
            held = list(source_heldout)[:HELDOUT_MAX] if source_heldout else heldout(source)
            report.update(_model_stats(model, tokenizer, held, target))
    for side, mine, other in (("source", cs, ct), ("target", ct, cs)):
        report[f"distinctive_{side}"] = [{"word": w, "source_count": cs[w], "target_count": ct[w]}
                                         for w in distinctive_words(mine, other, top, stop)]
    return report


# ---------------------------------------------------------------------------
# formatting


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "-" if value is None else str(value)


_PER_SIDE = [("documents", "docs"), ("word tokens", "words"), ("word types", "types"),
             ("fertility (subword tokens / word)", "fertility"), ("perplexity (held-out)", "ppl")]
_PAIRWISE = [("target types seen in the source", "type_overlap"),
             ("target tokens whose type is in the source", "token_coverage"),
             ("Jaccard index of the type sets", "jaccard"),
             ("Jensen-Shannon divergence of unigrams (bits, 0-1)", "jsd"),
             ("target characters split into byte pieces", "unknown_rate_target")]


def _side_value(report: dict, key: str, side: str) -> object:
    """Per-side keys are spelled `source_docs` for counts and `ppl_source` for model numbers."""
    return report.get(f"{side}_{key}", report.get(f"{key}_{side}"))


def format_domain(report: dict) -> list[str]:
    """Markdown lines: a table of the statistics and the two distinctive-word lists."""
    lines = ["| statistic | source | target |", "|---|---:|---:|"]
    for label, key in _PER_SIDE:
        s, t = _side_value(report, key, "source"), _side_value(report, key, "target")
        if s is not None or t is not None:
            lines.append(f"| {label} | {_fmt(s)} | {_fmt(t)} |")
    lines += ["", "| mismatch | value |", "|---|---:|"]
    lines += [f"| {label} | {_fmt(report[key])} |" for label, key in _PAIRWISE if key in report]
    for side in ("source", "target"):
        # Counts in table order (source / target) on both lists, so they read alike.
        lines += ["", f"Distinctive {side} words (source count / target count):", ""]
        entries = report.get(f"distinctive_{side}", [])
        lines += [f"- {d['word']} ({d['source_count']} / {d['target_count']})" for d in entries]
        if not entries:
            lines.append("- (none)")
    return lines


# ---------------------------------------------------------------------------
# loading


def _task_docs(path: str, max_docs: int) -> list[str]:
    """Training sources and targets of a task: both sides are target-domain text.

    Taken example by example (source, then target) so a `max_docs` cap keeps both.
    """
    from ..data.tasks import load_task, load_task_file

    out: list[str] = []
    for ex in load_task(load_task_file(path)).train:
        out += [t for t in (ex.source, ex.target) if t.strip()]
        if len(out) >= max_docs:
            break
    return out[:max_docs]


def load_corpus(spec: str, side: str = "target", max_docs: int = 20000) -> list[str]:
    """At most `max_docs` documents from a task YAML or comma-separated corpus paths / `pkg:` names.

    `side` only names the corpus in error messages: a task yields the same text either way.
    """
    from ..data.readers import iter_documents

    spec = spec.strip()
    if not spec:
        raise UserError(f"no {side} corpus given")
    if spec.lower().endswith((".yaml", ".yml")):
        docs = _task_docs(spec, max_docs)
    else:
        paths = [p.strip() for p in spec.split(",") if p.strip()]
        docs = list(islice(iter_documents(paths, text_field="text"), max_docs))
    if not docs:
        raise UserError(f"the {side} corpus '{spec}' has no documents")
    return docs
