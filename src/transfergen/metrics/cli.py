"""`transfergen score`: score plain-text files with no model.

    transfergen score --hyp hyp.txt --ref ref1.txt [--ref ref2.txt ...] --lang zh \\
        --metrics bleu,chrf,rouge,cider [--bleu-tokenize X] [--zh-rouge char|jieba] [--json]

Line i of every --ref file is a reference for line i of --hyp. An empty reference line
means "no reference in this file for this item", so items may have different numbers
of references; an item whose every reference line is empty is an error.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import UserError

DEFAULT_METRICS = "bleu,chrf,rouge,cider"


def add_score_parser(sub) -> None:
    """Register the `score` subcommand on an argparse subparsers object."""
    p = sub.add_parser("score", allow_abbrev=False, help="score hypothesis files against references",
                       description="Corpus BLEU, chrF, ROUGE and CIDEr-D of plain UTF-8 files, one "
                                   "segment per line; each --ref file is one reference per line.")
    p.add_argument("--hyp", required=True, metavar="FILE", help="hypotheses, one per line")
    p.add_argument("--ref", required=True, action="append", metavar="FILE",
                   help="references, one per line; repeat for several references per item")
    p.add_argument("--lang", default="en", help="target language code (zh selects Chinese tokenizers)")
    p.add_argument("--metrics", default=DEFAULT_METRICS, help=f"comma-separated (default {DEFAULT_METRICS})")
    p.add_argument("--bleu-tokenize", dest="bleu_tokenize", metavar="NAME",
                   help="sacrebleu tokenizer (default: zh for Chinese, 13a otherwise)")
    p.add_argument("--zh-rouge", dest="zh_rouge", choices=("jieba", "char"), default="jieba",
                   help="ROUGE units for Chinese: jieba words (default) or characters")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def read_lines(path: str) -> list[str]:
    """Lines of a UTF-8 file without their line ends; errors name the file and line."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise UserError("file not found", path=path) from None
    except OSError as exc:
        raise UserError(f"cannot read: {exc.strerror}", path=path) from None
    raw = data.split(b"\n")
    if raw and raw[-1] == b"":
        raw.pop()  # the final newline ends the last line; it does not start a new one
    lines = []
    for i, line in enumerate(raw, 1):
        try:
            lines.append(line.decode("utf-8").removesuffix("\r"))
        except UnicodeDecodeError as exc:
            raise UserError(f"not valid UTF-8 (byte {exc.start + 1})", path=path, line=i) from None
    return lines


def _lines(n: int) -> str:
    return f"{n} line" if n == 1 else f"{n} lines"


def load_pairs(hyp_path: str, ref_paths: list[str]) -> tuple[list[str], list[list[str]]]:
    """(hypotheses, references[i] = the non-empty reference lines for item i)."""
    hyps = read_lines(hyp_path)
    streams = [read_lines(p) for p in ref_paths]
    for path, stream in zip(ref_paths, streams, strict=True):
        if len(stream) != len(hyps):
            raise UserError(f"{path} has {_lines(len(stream))} but {hyp_path} has {len(hyps)}")
    if not hyps:
        raise UserError("no lines to score", path=hyp_path)
    refs = [[s[i] for s in streams if s[i].strip()] for i in range(len(hyps))]
    for i, item in enumerate(refs, 1):
        if not item:
            where = ref_paths[0] if len(ref_paths) == 1 else ", ".join(ref_paths)
            raise UserError(f"line {i} is empty in every reference file ({where})")
    return hyps, refs


def _table(scores: dict) -> str:
    """One row per metric (ROUGE adds its other variants), then the signatures."""
    rows = []
    for s in scores.values():
        rows.append((s.name, f"{s.score:.4f}" if s.name == "CIDEr-D" else f"{s.score:.2f}", s.signature))
        if s.name == "ROUGE-L":
            rows += [(f"  {k}", f"{v:.2f}", "") for k, v in s.details.items() if k != "rougeL"]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'metric':<{width}}  {'score':>8}  signature"]
    lines += [f"{name:<{width}}  {val:>8}  {sig}".rstrip() for name, val, sig in rows]
    return "\n".join(lines)


def run_score(args: argparse.Namespace) -> int:
    """Score the files named in `args`; print a table (or JSON). Returns the exit code."""
    from . import compute

    names = [m.strip().lower() for m in args.metrics.split(",") if m.strip()]
    if not names:
        raise UserError("--metrics is empty")
    hyps, refs = load_pairs(args.hyp, args.ref)
    options = {"bleu": {"tokenize": args.bleu_tokenize}, "rouge": {"zh_mode": args.zh_rouge}}
    scores = compute(names, hyps, refs, lang=args.lang,
                     options={k: v for k, v in options.items() if k in names})
    if args.json:
        # Per-item CIDEr scores would swamp the output; the library call returns them.
        out = {k: {**s.to_dict(), "details": {d: v for d, v in s.details.items() if d != "per_item"}}
               for k, s in scores.items()}
        print(json.dumps(out, ensure_ascii=False, indent=2))
    else:
        print(_table(scores))
    return 0
