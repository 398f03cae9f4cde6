"""What a study computes after its runs, written as JSON for the report to render.

    OUT/analysis/pretrain_cost.json  steps, tokens and FLOPs every transfer arm inherits
    OUT/analysis/baseline.json       the trivial baseline's outputs and scores on the test set
    OUT/analysis/domain.json         pretraining corpus vs task: vocabulary, divergence,
                                     fertility, the pretrained model's perplexities
    OUT/analysis/vs_scratch.json     each arm against scratch (and the `reference` arm) and the
                                     baseline: paired bootstrap delta, 95% interval, p (compare.py)
    OUT/analysis/bases.json          with `bases`: each base's cost (its own FLOPs and those of the
                                     base it continues) and its corpus' domain mismatch with the task
Each run's own comparisons (layers.json, attention.json) are written by its worker. This
step loads models and scores text; the report only reads what it wrote.
"""

from __future__ import annotations

from pathlib import Path

from ..io import write_json_atomic
from .compare import compare_arms
from .config import StudyConfig, analysis_file, pretrained_dir
from .costs import base_costs, pretrain_cost

BASE_DOMAIN_DOCS = 1500  # per base: enough for the divergence, and five bases stay affordable


def analyze_study(cfg: StudyConfig, out: str | Path) -> None:
    """Write every study-level analysis file (the domain analysis once: it is the slow one)."""
    out = Path(out)
    analysis_file(out, "x").parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(analysis_file(out, "pretrain_cost"), pretrain_cost(pretrained_dir(cfg, out)))
    write_json_atomic(analysis_file(out, "baseline"), baseline(cfg))
    write_json_atomic(analysis_file(out, "vs_scratch"), compare_arms(cfg, out))  # reads the baseline above
    if not analysis_file(out, "domain").is_file():
        domain = domain_analysis(cfg, out)
        if domain is not None:
            write_json_atomic(analysis_file(out, "domain"), domain)
    if cfg.bases and not analysis_file(out, "bases").is_file():
        write_json_atomic(analysis_file(out, "bases"), bases_analysis(cfg, out))


def bases_analysis(cfg: StudyConfig, out: Path) -> dict:
    """{name: {built_from, cost, domain}}: what each base cost and how far its own corpus (the
    text of its last stage) and its model are from the task."""
    from .bases import parse_bases

    costs, found = base_costs(cfg, out), {}
    for name, b in parse_bases(cfg.bases).items():
        source = ("selection" if b.select else f"task {b.task_text}" if b.task_text
                  else f"text of {b.text_from}" if b.text_from else "corpus")
        found[name] = {"init": b.init or None, "text": source,
                       "method": b.select.get("method", "cross-entropy-difference") if b.select else None,
                       "cost": costs.get(name), "domain": domain_analysis(cfg, out, name, BASE_DOMAIN_DOCS)}
    return found


def baseline(cfg: StudyConfig) -> dict | None:
    """The trivial baseline on the same test examples the runs decode: label, scores, outputs."""
    from ..baselines import baseline_outputs, resolve_kind
    from ..data.tasks import load_task, load_task_file
    from ..evaluate import score
    from ..metrics import flatten

    task = load_task_file(cfg.task)
    if resolve_kind(cfg.baseline, task) == "none":
        return None
    data = load_task(task)
    test = data.test[:cfg.test_examples]
    label, hyps = baseline_outputs(cfg.baseline, task, data.train, test, cfg.lead_words)
    return {"label": label, "scores": flatten(score(hyps, test, task)), "outputs": hyps}


def domain_analysis(cfg: StudyConfig, out: Path, base: str = "", n_docs: int = 5000) -> dict | None:
    """The domain-mismatch report of a base's pretraining corpus against the task's training texts;
    None when the pretrained model came from elsewhere (its corpus is unknown)."""
    from ..analysis.domain import domain_report, load_corpus
    from ..config import load_yaml
    from ..data.tasks import load_task_file
    from ..distributed import resolve_device
    from ..hub import load_model
    from ..metrics.tokenize import is_chinese
    from ..tokenizer import TextTokenizer

    pre = pretrained_dir(cfg, out, base)
    if not (pre / "run_config.yaml").is_file():
        return None
    source, held = _pretraining_docs(load_yaml(pre / "run_config.yaml").get("data") or {}, n_docs)
    if not source:
        return None
    task = load_task_file(cfg.task)
    # Words of a Chinese side need jieba even when the other side is English.
    lang = next((x for x in (task.target_lang, task.source_lang) if is_chinese(x)), task.target_lang)
    device = resolve_device(((cfg.base.get("train") or {}).get("device")) or "auto")  # where the runs train
    return domain_report(source, load_corpus(cfg.task, "target", max_docs=n_docs), lang=lang,
                         tokenizer=TextTokenizer.load(pre), model=load_model(pre, device=device), source_heldout=held)


def _pretraining_docs(data: dict, n: int = 5000, n_val: int = 200) -> tuple[list[str], list[str]]:
    """(n training documents, n_val validation documents) sampled across the whole pretraining
    corpus (a seeded reservoir: the first n would be one file of a multi-file corpus), split
    exactly as the pretraining run split it (`packing.is_val_doc`)."""
    import random

    from ..data.packing import is_val_doc
    from ..data.readers import iter_documents

    rng, train, val, seen = random.Random(0), [], [], {"train": 0, "val": 0}
    docs = iter_documents(data.get("corpus") or [], data.get("format", "auto"), data.get("text_field", "text"),
                          data.get("doc_sep", "line"))
    for i, doc in enumerate(docs):
        split, pool, cap = (("val", val, n_val) if is_val_doc(i, data.get("val_fraction", 0.02))
                            else ("train", train, n))
        seen[split] += 1
        if len(pool) < cap:
            pool.append(doc)
        elif (j := rng.randrange(seen[split])) < cap:
            pool[j] = doc
    return train, val
