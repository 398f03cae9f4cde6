"""A study's report: `report.md` plus a self-contained `report.html` (figures inlined).

The report is built once as a list of blocks (heading, paragraph, table, figure) and
rendered twice, so the Markdown and the HTML always say the same thing. It only reads
what the runs and the analysis step wrote (`results.py`): it loads no model and imports
no torch, so it can be rebuilt at once, also while runs are missing.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from . import plots
from .document import Doc
from .io import read_json, write_json_atomic
from .findings import findings, verdicts
from .results import RunResult, collect, mean_curves, read_analysis, summarize
from .study.config import StudyConfig, analysis_file, headline_metric, pretrained_dir, scratch_arm


def _fmt(x, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float) and (abs(x) >= 1e6):
        return f"{x:.2e}"
    return f"{x:,.{digits}f}" if isinstance(x, float) else f"{x:,}" if isinstance(x, int) else str(x)


def _reach(row: dict, key: str, scratch_arm: str | None) -> str:
    if row["arm"] == scratch_arm:
        return "(reference)"
    hit = row.get(f"reach_{key}", "n/a")
    if hit == "n/a":
        return "-"
    if hit is None:
        return "not reached"
    if hit["step"] == 0:
        return "at step 0, before any fine-tuning"
    if hit.get("first_eval"):  # already there at the first evaluation: only a bound is known
        return (f"by step {hit['step']}, the first evaluation (>= {hit['speedup_steps']:.1f}x steps, "
                f">= {hit['speedup_flops']:.1f}x FLOPs)")
    return f"step {hit['step']} ({hit['speedup_steps']:.1f}x steps, {hit['speedup_flops']:.1f}x FLOPs)"


# The summary's columns by name, in table order; the terminal summary shows TERMINAL_COLUMNS.
SUMMARY_COLUMNS = ("size", "arm", "test", "test_ppl", "final_val_loss", "trainable_params", "steps",
                   "flops_target", "flops_total", "train_s", "reach_val_loss", "reach_metric")
TERMINAL_COLUMNS = ("size", "arm", "test", "test_ppl", "final_val_loss", "steps", "train_s")


def _headers(metric: str) -> dict[str, str]:
    return {"size": "size", "arm": "arm", "test": f"test {metric} (mean ± std, seeds)", "test_ppl": "test ppl",
            "final_val_loss": "final val loss", "trainable_params": "trainable params", "steps": "steps",
            "flops_target": "FLOPs target", "flops_total": "FLOPs incl. pretraining", "train_s": "train s",
            "reach_val_loss": "reaches scratch's val loss", "reach_metric": f"reaches scratch's val {metric}"}


def _summary_cells(r: dict, metric: str, scratch_arm: str | None) -> dict:
    t = r["test"]
    return {"size": r["train_examples"] or r["size"] or "all", "arm": r["arm"],
            "test": f"{t['mean']:.2f} ± {t['std']:.2f} ({t['n']})", "test_ppl": _fmt(r["test_ppl"]),
            "final_val_loss": _fmt(r["final_val_loss"], 3), "trainable_params": _fmt(r["trainable_params"]),
            "steps": r["steps"], "flops_target": _fmt(r["flops_target"]), "flops_total": _fmt(r["flops_total"]),
            "train_s": _fmt(r["train_s"], 0), "reach_val_loss": _reach(r, "val_loss", scratch_arm),
            "reach_metric": _reach(r, metric, scratch_arm)}


def summary_table(rows: list[dict], metric: str, base: dict | None,
                  scratch_arm: str | None) -> tuple[list[str], list[list]]:
    """The summary table, columns in SUMMARY_COLUMNS order (also printed by the CLI)."""
    cells = [_summary_cells(r, metric, scratch_arm) for r in rows]
    if base is not None:  # the trivial baseline trains nothing
        cells.append({**dict.fromkeys(SUMMARY_COLUMNS, "-"), "size": "same test set", "arm": base["label"],
                      "test": f"{base['scores'].get(metric, float('nan')):.2f}",
                      **dict.fromkeys(("trainable_params", "steps", "flops_target", "flops_total", "train_s"), "0")})
    header = _headers(metric)
    return [header[c] for c in SUMMARY_COLUMNS], [[row[c] for c in SUMMARY_COLUMNS] for row in cells]


# ---------------------------------------------------------------------------
# sections


def _verdict(doc: Doc, by_size: dict[str, list[str]]) -> None:
    doc.h(2, "Verdict")
    doc.p("Each arm against scratch on the test set: the paired bootstrap over the test items (1,000 "
          "resamples; sacrebleu's for BLEU and chrF, the same resampling of per-item scores for ROUGE and "
          "CIDEr-D), seed s of an arm against seed s of scratch. 'Not separable' means p >= 0.05 or an "
          "interval that includes zero.")
    for label, lines in by_size.items():
        doc.h(3, label)
        doc.md([f"- {line}" for line in lines])


def _starts(cfg: StudyConfig, out: Path) -> str:
    if not cfg.bases:
        return str(pretrained_dir(cfg, out))
    first = next(iter(cfg.bases))
    return "the study's bases under " + str(Path(out) / "bases") + " (" + ", ".join(
        f"{a['name']}: {a.get('base') or first}" for a in cfg.arms) + ")"


def _intro(doc: Doc, cfg: StudyConfig, out: Path, results: list[RunResult], n_planned: int) -> None:
    from .data.tasks import load_task_file

    task = load_task_file(cfg.task)
    r0 = results[0].run.cfg if results else None
    doc.h(1, f"Study: {cfg.name}")
    doc.p(f"Task {task.name} ({task.source_lang} -> {task.target_lang}, metrics {', '.join(task.metrics)}); "
          f"transfer arms start from {_starts(cfg, out)}. Arms: {', '.join(a['name'] for a in cfg.arms)}; "
          f"training-set sizes: {', '.join(str(s or 'all') for s in cfg.sizes)}; seeds: {cfg.seeds}. "
          f"{len(results)} of {n_planned} runs finished.")
    if cfg.note:
        doc.p(cfg.note)
    if r0 is not None:
        e = r0.eval
        doc.p(f"Every arm: {r0.train.max_steps} steps (compute-matched arms more), batch {r0.train.batch_size}, "
              f"lr {r0.train.lr} ({r0.train.schedule}), the same model shape and tokenizer; decoding: "
              f"{'greedy' if e.num_beams == 1 else f'beam {e.num_beams}'}, at most {e.max_new_tokens} new tokens, "
              f"no_repeat_ngram_size {e.no_repeat_ngram_size}, repetition_penalty {e.repetition_penalty}. "
              f"Test scores on {results[0].done['test_n']} test examples; validation curves on "
              f"{e.examples} validation examples.")


def _compute(doc: Doc, out: Path) -> None:
    pre = read_analysis(out, "pretrain_cost")
    doc.h(2, "Compute")
    if pre is None:
        doc.p("The pretrained model came from elsewhere (no training log): its cost is unknown, so "
              "'FLOPs incl. pretraining' equals the target-task FLOPs.")
        return
    doc.p(f"Pretraining cost that every transfer arm inherits: {pre['steps']:,} steps, {pre['tokens']:,} tokens, "
          f"{pre['flops']:.2e} FLOPs, {pre['elapsed_s'] / 60:.1f} min. 'FLOPs target' counts the fine-tuning "
          f"alone; 'FLOPs incl. pretraining' adds this for transfer arms. FLOPs are estimates per token: 6 per "
          f"trained weight (forward, gradient to the input, gradient to the weight), 4 per frozen weight "
          f"(no weight gradient), plus attention. LoRA therefore costs about two thirds of full fine-tuning "
          f"per token, not less: every frozen weight still runs forward and backward, and the adapters add "
          f"their own. A 'budget: matched' scratch arm gets the pretraining FLOPs as extra target-task steps.")


def _curves(doc: Doc, results: list[RunResult], arms: list[str], metric: str, sizes: list, fig_dir: Path) -> None:
    doc.h(2, "Learning curves")
    doc.p("Mean over seeds at each evaluation. Validation loss is per target token (teacher forcing); "
          f"validation {metric} decodes the fixed validation subset.")
    for size in sizes:
        curves = {"val_loss": mean_curves(results, size, "val_loss"), metric: mean_curves(results, size, metric)}
        curves["time"] = _time_curves(results, size, metric)
        path = fig_dir / f"curves_n{size or 'all'}.png"
        plots.learning_curves(curves, arms, metric, path, f"training examples: {size or 'all'}")
        doc.fig(path, f"Learning curves, {size or 'all'} training examples")


def _time_curves(results: list[RunResult], size, metric: str) -> dict:
    out: dict[str, list] = {}
    for r in results:  # seed 0 (the first finished seed) per arm: wall time does not average well
        if r.run.size == size and r.arm not in out:
            out[r.arm] = [(c["step"], c["elapsed_s"], c[metric]) for c in r.curve if metric in c]
    return out


def _scores(doc: Doc, rows: list[dict], results: list[RunResult], arms: list[str], metric: str,
            base: dict | None, fig_dir: Path) -> None:
    per_seed: dict = {}
    for r in results:
        per_seed.setdefault((r.run.size, r.arm), []).append(r.done["test"].get(metric, float("nan")))
    b = base["scores"].get(metric) if base else None
    plots.final_scores(rows, arms, metric, per_seed, b, base["label"] if base else "", fig_dir / "final.png")
    doc.fig(fig_dir / "final.png", f"Test {metric} per arm (bars: mean; dots: seeds; dashed: trivial baseline)")
    if len({r["size"] for r in rows}) > 1:
        plots.metric_vs_size(rows, arms, metric, b, fig_dir / "size.png")
        doc.fig(fig_dir / "size.png", f"Test {metric} against training-set size (error bars: std over seeds)")


def _first_at_largest(results: list[RunResult]) -> dict[str, RunResult]:
    """arm -> its first finished run at the largest training-set size (None = all = largest)."""
    size = lambda r: r.run.size or 10 ** 12  # noqa: E731
    largest = max(map(size, results), default=None)
    out: dict[str, RunResult] = {}
    for r in results:
        if size(r) == largest:
            out.setdefault(r.arm, r)
    return out


def _layers(doc: Doc, results: list[RunResult], arms: list[str], fig_dir: Path) -> None:
    per_arm = {arm: json.loads((r.run.dir / "layers.json").read_text(encoding="utf-8"))
               for arm, r in _first_at_largest(results).items() if (r.run.dir / "layers.json").is_file()}
    if not per_arm:
        return
    doc.h(2, "Which layers changed")
    plots.layer_change(per_arm, arms, fig_dir / "layers.png")
    doc.fig(fig_dir / "layers.png", "Relative weight change per layer and linear CKA between pretrained and "
                                    "fine-tuned hidden states on target inputs (largest size, first seed)")
    rows = [[arm, " ".join(f"{w['relative_change']:.3f}" for w in rep["weight_change"]),
             " ".join(f"{c['cka']:.2f}" for c in rep["cka"])] for arm, rep in per_arm.items()]
    names = next(iter(per_arm.values()))
    doc.table(["arm", "weight change: " + ", ".join(w["name"] for w in names["weight_change"]),
               "CKA: " + ", ".join(c["name"] for c in names["cka"])], rows)


def _samples(doc: Doc, results: list[RunResult], base: dict | None, n: int) -> None:
    preds: dict[str, list[dict]] = {}
    for arm, r in _first_at_largest(results).items():
        lines = (r.run.dir / "test" / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
        preds[arm] = [json.loads(x) for x in lines[:n]]
    if not preds:
        return
    doc.h(2, "Sample generations (test set, largest size, first seed)")
    first = next(iter(preds.values()))
    header = ["source", "reference"] + list(preds) + ([base["label"]] if base else [])
    rows = []
    for i, ex in enumerate(first):
        src = ex["source"] if len(ex["source"]) <= 300 else ex["source"][:300] + " ..."
        row = [src, ex["references"][0]] + [preds[a][i]["hypothesis"] for a in preds]
        rows.append(row + ([base["outputs"][i]] if base else []))
    doc.table(header, rows)


def _domain(doc: Doc, out: Path) -> None:
    """Domain mismatch between the pretraining corpus and the task (analysis/domain.json)."""
    from .analysis.domain import format_domain

    rep = read_analysis(out, "domain")
    if rep is None:
        return  # a checkpoint from elsewhere (its corpus is unknown), or the analysis has not run
    doc.h(2, "Domain mismatch: pretraining corpus vs target task")
    doc.p("Source = the pretraining corpus (5,000 documents sampled across it), target = the task's training texts "
          "(sources and targets). Perplexities are the pretrained model's: on the pretraining run's own "
          "validation documents, and on target text it never trained on.")
    doc.md(format_domain(rep))


def _bases(doc: Doc, out: Path, rows: list[dict], metric: str) -> None:
    """Each base's cost and distance from the task (analysis/bases.json), and every arm against
    the study's reference arm (analysis/vs_scratch.json)."""
    bases = read_analysis(out, "bases")
    if bases:
        doc.h(2, "Bases: what each cost and how far its text is from the task")
        doc.p("Text = the corpus of the base's own last stage (a selection, the task's text, or its corpus); "
              "FLOPs total adds the base it continues. JSD: unigram Jensen-Shannon divergence of that text "
              "and the task's training text (1,500 documents each); perplexities are the base model's.")
        table = []
        for name, b in bases.items():
            c, d = b.get("cost") or {}, b.get("domain") or {}
            text = b["text"] + (f" ({b['method']})" if b.get("method") else "")
            table.append([name, b.get("init") or "-", text, _fmt(c.get("tokens")), _fmt(c.get("flops")),
                          _fmt(c.get("total_flops")), _fmt(d.get("jsd"), 3), _fmt(d.get("token_coverage"), 3),
                          _fmt(d.get("ppl_source"), 1), _fmt(d.get("ppl_target"), 1)])
        doc.table(["base", "continues", "text", "tokens", "FLOPs", "FLOPs total", "JSD vs task",
                   "target tokens covered", "ppl own text", "ppl task text"], table)
    vs = [(r, r["vs_reference"]) for r in rows if "vs_reference" in r]
    if vs:
        doc.h(2, f"Against {vs[0][1]['against']}")
        doc.table(["size", "arm", f"delta {metric}", "95% CI", "p", "per-seed deltas"],
                  [[r["train_examples"] or r["size"], r["arm"], f"{v['delta']:+.2f}",
                    f"[{v['ci_low']:+.2f}, {v['ci_high']:+.2f}]", f"{v['p']:.3f}",
                    ", ".join(f"{x:+.2f}" for x in v.get("seed_deltas") or [])] for r, v in vs])


def _attention(doc: Doc, results: list[RunResult], fig_dir: Path) -> None:
    """The attention maps the first transfer run wrote: the pretrained model's and its own."""
    found = next((r.run.dir / "attention.json" for r in results if (r.run.dir / "attention.json").is_file()), None)
    if found is None:
        return
    att = read_json(found)
    doc.h(2, "Attention on a test input")
    path = fig_dir / "attention.png"
    plots.attention_maps(att["maps"], att["tokens"], path, f"last layer, head {att['head']}, on a test prompt")
    doc.fig(path, "Attention of the pretrained and the fine-tuned model on the same test prompt (last layer, "
                  f"head {att['head']}; square-root colour scale), and what the last position, which predicts "
                  "the first target token, attends to")


def _runs(doc: Doc, runs: list, failed: list[str]) -> None:
    doc.h(2, "Runs")
    rows = [[r.id, "done" if r.done() else "failed" if r.id in failed else "not run", str(r.dir)] for r in runs]
    doc.table(["run", "status", "folder"], rows)


def _analysis_missing(doc: Doc, out: Path) -> None:
    if not analysis_file(out, "baseline").is_file():
        doc.p("The study's analysis (trivial baseline, domain mismatch, pretraining cost) has not run yet: "
              "`transfergen study` without --report-only runs it after the runs.")


def _write(doc: Doc, out: Path, name: str, summary: dict) -> None:
    """report.md, report.html and summary.json (the summary rows as numbers)."""
    (out / "report.md").write_text(doc.markdown(out), encoding="utf-8")
    (out / "report.html").write_text(doc.html(f"transfergen study: {name}"), encoding="utf-8")
    write_json_atomic(out / "summary.json", summary)


def write_report(cfg: StudyConfig, out: str | Path, failed: list[str] | None = None) -> dict:
    """Write report.md, report.html and figures/ under `out`; returns paths and the summary."""
    out = Path(out)
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    runs, results = collect(cfg, out)
    metric = headline_metric(cfg)
    rows = summarize(cfg, out, results, metric)
    base = read_analysis(out, "baseline")
    arms = [a["name"] for a in cfg.arms]
    sizes = [s for s in cfg.sizes if any(r.run.size == s for r in results)]
    doc, (header, table) = Doc(), summary_table(rows, metric, base, scratch_arm(cfg))
    by_size = verdicts(rows, metric, base, scratch_arm(cfg))
    _intro(doc, cfg, out, results, len(runs))
    _verdict(doc, by_size)
    doc.h(2, "Summary")
    doc.table(header, table)
    doc.h(2, "What the numbers say")
    doc.md([f"- {line}" for line in findings(rows, metric, base, scratch_arm(cfg))])
    _compute(doc, out)
    if results:
        _analysis_missing(doc, out)
        _curves(doc, results, arms, metric, sizes, fig_dir)
        _scores(doc, rows, results, arms, metric, base, fig_dir)
        _domain(doc, out)
        _bases(doc, out, rows, metric)
        _layers(doc, results, arms, fig_dir)
        _attention(doc, results, fig_dir)
        _samples(doc, results, base, cfg.samples)
    _runs(doc, runs, failed or [])
    _write(doc, out, cfg.name, {"metric": metric, "verdict": by_size, "rows": rows,
                                "baseline": base and {k: base[k] for k in ("label", "scores")}})
    return {"md": out / "report.md", "html": out / "report.html", "header": header, "table": table,
            "metric": metric, "verdict": by_size}


def summary_lines(rep: dict, keep: tuple[str, ...] = TERMINAL_COLUMNS) -> list[str]:
    """The summary's `keep` columns (SUMMARY_COLUMNS names) as a Markdown table for a terminal."""
    idx = [SUMMARY_COLUMNS.index(name) for name in keep]
    header, rows = rep["header"], rep["table"]
    lines = ["| " + " | ".join(header[i] for i in idx) + " |", "|" + "---|" * len(idx)]
    return lines + ["| " + " | ".join(str(r[i]) for i in idx) + " |" for r in rows]
