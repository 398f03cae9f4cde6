"""`transfergen analyze domain | layers`: why transfer worked, from the command line.

    domain   pretraining corpus vs target corpus (`domain.py`); with --model, the model's
             fertility and perplexities too; when the mismatch is high, the remedy the
             project's studies measured (`remedy.py`)
    layers   per-layer weight change and CKA after fine-tuning (`layers.py`)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from ..checks import at_least, device_flag, flag_type
from ..errors import UserError

if TYPE_CHECKING:
    import torch


def add_analyze_parser(sub) -> None:
    """Register the `analyze` subcommand on an argparse subparsers object."""
    p = sub.add_parser("analyze", allow_abbrev=False, help="why transfer worked: domain mismatch, layer change")
    what = p.add_subparsers(dest="what", required=True)
    d = what.add_parser("domain", allow_abbrev=False, help="pretraining corpus vs target corpus",
                        description="CORPUS: a task YAML, or comma-separated text/JSONL files or pkg: names.")
    d.add_argument("--source", required=True, metavar="CORPUS")
    d.add_argument("--target", required=True, metavar="CORPUS")
    d.add_argument("--model", help="a run folder: adds fertility, unknown rate and perplexities")
    d.add_argument("--lang", default="en", help="word segmentation (zh: jieba)")
    d.add_argument("--out", help="also write the report as JSON here")
    device_flag(d)
    l_ = what.add_parser("layers", allow_abbrev=False, help="per-layer weight change and CKA after fine-tuning")
    l_.add_argument("--pretrained", required=True)
    l_.add_argument("--finetuned", required=True)
    l_.add_argument("--task", required=True, metavar="TASK.yaml", help="target inputs: its test sources")
    l_.add_argument("--examples", type=flag_type(int, at_least(1)), default=32)
    l_.add_argument("--out", help="also write the report as JSON here")
    device_flag(l_)


def _domain(args: argparse.Namespace, device: torch.device) -> dict:
    from .domain import domain_report, format_domain, load_corpus
    from .remedy import suggest

    tok = model = None
    if args.model:
        from ..hub import load_model
        from ..tokenizer import TextTokenizer

        tok, model = TextTokenizer.load(args.model), load_model(args.model, device=device)
    rep = domain_report(load_corpus(args.source, "source"), load_corpus(args.target, "target"),
                        lang=args.lang, tokenizer=tok, model=model)
    print("\n".join(format_domain(rep)))
    rep["remedy"] = suggest(rep)  # empty when the mismatch is low
    if rep["remedy"]:
        print("\n" + "\n".join(rep["remedy"]))
    return rep


def _layers(args: argparse.Namespace, device: torch.device) -> dict:
    from ..data.tasks import load_task, load_task_file
    from .layers import format_layers, layer_report

    texts = [ex.source for ex in load_task(load_task_file(args.task)).test[:args.examples]]
    rep = layer_report(args.pretrained, args.finetuned, texts, device=device)
    print("\n".join(format_layers(rep)))
    return rep


def run_analyze(args: argparse.Namespace, rest: list[str]) -> int:
    """`transfergen analyze ...`; the report also goes to --out as JSON."""
    if rest:
        raise UserError(f"unexpected argument(s) for analyze: {' '.join(rest)}")
    from ..distributed import resolve_device

    device = resolve_device(args.device, key="--device")
    rep = _domain(args, device) if args.what == "domain" else _layers(args, device)
    if args.out:
        Path(args.out).write_text(json.dumps(rep, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0
