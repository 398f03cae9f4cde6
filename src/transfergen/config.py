"""Typed run configuration, mirrored one-to-one by YAML and `--section.key=value` flags.

The dataclasses below are the single source of truth: `configs/*.yaml` hold the same
keys, and every field can be overridden on the command line as `--train.lr=3e-4`.
Unknown keys, values of the wrong type and values out of their field's range (`check=`,
see `checks.py`) fail with a one-line `ConfigError` that names the key, before any work
starts.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import Any, Union

import yaml

from .checks import above, at_least, check_field, each, nonempty, one_of, within
from .errors import ConfigError
from .io import write_text_atomic


def opt(default: Any = dataclasses.MISSING, doc: str = "", *, factory: Callable[[], Any] | None = None,
        strategy: str | None = None, check: Callable[[Any], str | None] | None = None) -> Any:
    """A config field carrying its one-line help (`--help` lists it), its range check
    (`checks.py`) and, for strategy options, the strategy that owns it."""
    meta = {"help": doc, **({"strategy": strategy} if strategy else {}), **({"check": check} if check else {})}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# run_config.yaml's list of starts and resumes (`resume.py`); not a setting.
HISTORY_KEY = "history"


@dataclass
class ModelConfig:
    """Decoder-only transformer shape. `None` fields take the preset's value."""

    preset: str = opt("small", "tiny (~1M) | small (~5M) | base (~25M) non-embedding parameters")
    like: str | None = opt(None, "copy the shape of this model folder (scratch baselines)")
    n_layer: int | None = opt(None, "decoder blocks", check=at_least(1))
    d_model: int | None = opt(None, "residual stream width", check=at_least(1))
    n_head: int | None = opt(None, "query heads (d_model / n_head must be even, for RoPE)", check=at_least(1))
    n_kv_head: int | None = opt(None, "key/value heads; fewer than n_head gives grouped-query attention",
                                check=at_least(1))
    d_ff: int | None = opt(None, "SwiGLU hidden width", check=at_least(1))
    max_seq_len: int | None = opt(None, "longest sequence (RoPE table size)", check=at_least(1))
    rope_theta: float = opt(10000.0, "RoPE base", check=above(0))
    norm_eps: float = opt(1e-5, "RMSNorm epsilon", check=above(0))
    init_std: float = opt(0.02, "std of the normal init (output projections scaled by 1/sqrt(2 n_layer))",
                          check=above(0))


@dataclass
class TokenizerConfig:
    """Byte-level BPE trained on the corpus, or an existing tokenizer folder."""

    path: str | None = opt(None, "a local HF tokenizer/checkpoint folder; null trains one")
    vocab_size: int = opt(8192, "BPE vocabulary size, special tokens included")
    min_frequency: int = opt(2, "a merge needs a pair seen at least this often", check=at_least(1))
    jieba: bool = opt(False, "pre-segment Chinese with jieba so merges respect word boundaries")
    max_train_docs: int = opt(200_000, "documents the BPE learns from (statistics converge long before)",
                              check=at_least(1))


@dataclass
class DataConfig:
    """Where the text comes from and how it is split and cached."""

    corpus: list[str] = opt(doc="text / .gz / .jsonl files, or pkg: corpora", factory=list)
    format: str = opt("auto", "auto (by extension; a folder is hf) | text | jsonl | csv | parquet | arrow | hf")
    text_field: str = opt("text", "the JSONL field or table column holding the document")
    doc_sep: str = opt("line", "line: a document per line | blank: blank-line separated")
    val_fraction: float = opt(0.02, "documents held out for validation", check=within(0, 1, high_open=True))
    cache_dir: str | None = opt(None, "token cache folder; null: <out>/data")
    num_workers: int = opt(2, "tokenizer processes (1: in this process)", check=at_least(1))
    exclude: list[str] = opt(doc="task YAMLs whose val/test text must not be pretrained on: documents "
                                 "sharing a word 13-gram with it are left out", factory=list)


@dataclass
class TrainConfig:
    """The one training loop's knobs (pretraining, fine-tuning and scratch baselines)."""

    max_steps: int = opt(1000, "optimizer updates (the budget; the schedule spans it)", check=at_least(1))
    max_minutes: float | None = opt(None, "also stop (and checkpoint) once this wall time is spent", check=above(0))
    batch_size: int = opt(16, "sequences per micro-batch (per rank)", check=at_least(1))
    seq_len: int = opt(256, "pretraining block length in tokens", check=at_least(1))
    grad_accum: int = opt(1, "micro-batches per update", check=at_least(1))
    lr: float = opt(1e-3, "peak learning rate (each group's base; strategies scale it)", check=above(0))
    weight_decay: float = opt(0.1, "AdamW decay on matrices (norm gains are exempt)", check=at_least(0))
    beta1: float = opt(0.9, "AdamW beta1", check=within(0, 1, high_open=True))
    beta2: float = opt(0.95, "AdamW beta2", check=within(0, 1, high_open=True))
    schedule: str = opt("exponential", "exponential | cosine | constant, after the warmup")
    warmup_steps: int = opt(50, "linear warmup updates", check=at_least(0))
    min_lr_ratio: float = opt(0.1, "the schedule's multiplier at max_steps", check=within(0, 1))
    grad_clip: float | None = opt(1.0, "global-norm clipping; null disables", check=above(0))
    dtype: str = opt("auto", "auto (bf16 where the hardware has it, else fp32) | fp32 | bf16 | fp16 (CUDA)")
    device: str = opt("auto", "auto (CUDA, then MPS, then CPU) | cpu | cuda | cuda:N | mps")
    parallel: str = opt("ddp", "under torchrun: ddp (every rank holds the model) | fsdp (FSDP2: parameters, "
                        "gradients and AdamW state sharded over the ranks)", check=one_of("ddp", "fsdp"))
    activation_checkpointing: bool = opt(False, "recompute each block's activations in the backward pass: "
                                         "less memory, about 1/3 more compute")
    seed: int = opt(1337, "initialisation and data-order seed", check=at_least(0))
    log_every: int = opt(10, "steps between loss records", check=at_least(1))
    eval_every: int = opt(100, "steps between validation evaluations", check=at_least(1))
    eval_batches: int = opt(8, "validation batches per evaluation", check=at_least(1))
    eval_at_start: bool = opt(False, "also evaluate before the first step (curves start at step 0)")
    save_every: int = opt(200, "steps between checkpoints", check=at_least(1))
    keep_checkpoints: int = opt(2, "complete checkpoints kept", check=at_least(1))
    threads: int | None = opt(None, "torch intra-op threads; null keeps torch's default", check=at_least(1))
    compile: bool = opt(False, "torch.compile the model for training (bench/RESULTS.md: 1.36x in emulated bf16)")
    max_examples: int | None = opt(None, "fine-tuning: a fixed, seeded subset of the training pairs", check=at_least(1))
    best_metric: str | None = opt(None, "keep RUN/best/ by this evaluation number (val_loss, bleu, ...)")
    patience: int = opt(0, "stop after this many evaluations without a new best (0: never)", check=at_least(0))
    report_to: list[str] = opt(doc="trackers besides metrics.jsonl (tracking.py)", factory=list,
                               check=each(one_of("tensorboard", "wandb", "mlflow")))


@dataclass
class TaskConfig:
    """A generation task: where its data is, how a prompt looks, how it is scored.

    Declared in `configs/tasks/*.yaml`; `reader` names a registered reader (jsonl,
    tsv, parallel, or one for a known data set) and `path` is what it reads.
    """

    name: str = opt("", "the task's name (default: the task file's stem)")
    reader: str = opt("jsonl", "jsonl | tsv | parallel | csv | parquet | arrow | hf | multi30k | ... (README: Tasks)")
    path: str = opt("", "what the reader reads ({split} for pre-split files)")
    options: dict = opt(doc="reader-specific options (languages, direction, ...)", factory=dict)
    source_field: str = opt("source", "the column (JSONL field) holding the source: jsonl, csv, parquet, arrow, hf")
    target_field: str = opt("target", "the column holding the target")
    references_field: str = opt("references", "the column of further references (a list of strings, or one); "
                                "optional unless renamed")
    source_lang: str = opt("en", "source language code")
    target_lang: str = opt("en", "target language code (picks the metrics' tokenisation)")
    prompt: str = opt("{source}", "the text before the separator; {source} is the input")
    metrics: list[str] = opt(doc="bleu, chrf, rouge, cider", factory=lambda: ["bleu"], check=nonempty)
    val_size: int = opt(500, "held out from train when the data has no val split", check=at_least(0))
    test_size: int = opt(1000, "held out when the data has no test split", check=at_least(0))
    split_seed: int = opt(0, "seed of those splits and of train.max_examples", check=at_least(0))
    max_source_tokens: int = opt(192, "longer prompts are cut from the end (counted in the log)", check=at_least(1))
    max_target_tokens: int = opt(64, "longer targets are cut from the end, eos kept (counted)", check=at_least(2))
    loss_on: str = opt("target", "target | all: which tokens the loss covers")


@dataclass
class StrategyConfig:
    """Knowledge selection for transfer. `name` joins registry entries with '+', e.g.
    `reinit+discriminative`. Every other field belongs to one strategy (its `strategy`
    metadata); setting it away from its default without selecting that strategy fails."""

    name: str = opt("full", "full | freeze | gradual | discriminative | reinit | lora | l2sp, joined by '+'")
    freeze_embeddings: bool = opt(False, "freeze the input embedding (and the tied head)", strategy="freeze")
    freeze_bottom: int = opt(0, "freeze the bottom k blocks", strategy="freeze", check=at_least(0))
    train_top: int | None = opt(None, "freeze all but the top k blocks, final norm and head", strategy="freeze",
                                check=at_least(0))
    unfreeze_every: int = opt(100, "one more block from the top every K steps", strategy="gradual", check=at_least(1))
    lr_decay: float = opt(0.8, "block lr x decay**(distance from the top)", strategy="discriminative",
                          check=within(0, 1, low_open=True))
    reinit_top: int = opt(1, "re-initialise the top k blocks", strategy="reinit", check=at_least(1))
    lora_rank: int = opt(8, "adapter rank", strategy="lora", check=at_least(1))
    lora_alpha: float = opt(16.0, "adapter scale alpha / rank", strategy="lora", check=above(0))
    lora_dropout: float = opt(0.0, "dropout on the adapter input", strategy="lora", check=within(0, 1, high_open=True))
    lora_targets: list[str] = opt(doc="linear modules (name suffixes) that get adapters", strategy="lora",
                                  factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"], check=nonempty)
    lora_lr: float | None = opt(None, "the adapters' lr; null: train.lr", strategy="lora", check=above(0))
    l2sp_alpha: float = opt(0.01, "strength of the pull towards the pretrained weights", strategy="l2sp",
                            check=above(0))

    def __post_init__(self) -> None:
        """An option of a strategy that `name` does not select would do nothing: refuse it."""
        chosen = {n.strip() for n in self.name.split("+")}
        for f in dataclasses.fields(self):
            owner = f.metadata.get("strategy")
            if owner and owner not in chosen and getattr(self, f.name) != field_default(f):
                raise ConfigError(f"config key 'strategy.{f.name}' is an option of strategy '{owner}', "
                                  f"which strategy.name '{self.name}' does not select")


@dataclass
class VocabConfig:
    """Adjusting the input/output layers when the target needs tokens the model lacks."""

    extend_from: list[str] = opt(doc="target-side corpus files the new tokens are learned from", factory=list)
    add: int = opt(0, "how many new tokens to learn and add (0: none)", check=at_least(0))


@dataclass
class EvalConfig:
    """Generation-based evaluation: during fine-tuning and in `transfergen evaluate`."""

    generate: bool = opt(False, "fine-tuning: also decode + score the val subset at each evaluation")
    examples: int = opt(200, "the fixed validation subset decoded during training", check=at_least(1))
    num_beams: int = opt(1, "1: greedy; more: beam search", check=at_least(1))
    max_new_tokens: int = opt(64, "longest generated target", check=at_least(1))
    length_penalty: float = opt(1.0, "beam score = log-prob / length**penalty")
    no_repeat_ngram_size: int = opt(0, "never repeat an n-gram of this size (0: off)", check=at_least(0))
    repetition_penalty: float = opt(1.0, "CTRL penalty on tokens already seen (1: off)", check=above(0))
    batch_size: int = opt(32, "prompts decoded at once", check=at_least(1))


@dataclass
class RunConfig:
    """Everything a run needs. `init` is `scratch` or a path to a pretrained model."""

    out: str = opt("runs/default", "the run folder")
    init: str = opt("scratch", "scratch, or a local HF causal-LM folder to start from")
    resume: bool = opt(False, "continue from the run's last checkpoint")
    model: ModelConfig = field(default_factory=ModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    vocab: VocabConfig = field(default_factory=VocabConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def field_default(f: dataclasses.Field) -> Any:
    """A field's default value (calling its factory)."""
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


# ---------------------------------------------------------------------------
# dict <-> dataclass with validation


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check/convert `value` to annotation `tp`, or raise ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"config key '{key}': expected {tp}, got {value!r}")
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, (str, int, float)):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        return [_coerce(v, item, key) for v in value]
    if tp is dict:
        if isinstance(value, dict):
            return dict(value)
        raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}': expected true/false, got {value!r}")
    if isinstance(value, str) and tp in (int, float):
        # YAML 1.1 reads "3e-4" as a string; numbers written that way are still numbers.
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}") from None
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
    raise ConfigError(f"config key '{key}': unsupported type {_type_name(tp)}")


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass `cls` from a nested dict, rejecting unknown keys and values out of range."""
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{prefix.rstrip('.') or '<root>'}' must be a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise ConfigError(f"unknown config key '{prefix}{key}' (known: {', '.join(sorted(fields))})")
    kwargs = {}
    for key, value in data.items():
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = from_dict(tp, value or {}, prefix=f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, tp, prefix + key)
            check_field(fields[key], kwargs[key], prefix + key)
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config dataclass (YAML/JSON ready)."""
    return dataclasses.asdict(cfg)


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `update` into a copy of `base`."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict; syntax errors name file and line."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("config file not found", path=str(p))
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(f"invalid YAML: {getattr(exc, 'problem', exc)}", path=str(p), line=line) from None
    if not isinstance(data, dict):
        raise ConfigError("a config file must hold a mapping of sections", path=str(p))
    return data


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """Turn `--a.b=v` / `--a.b v` flags into a nested dict; values parse as YAML scalars."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise ConfigError(f"unexpected argument '{arg}' (overrides look like --train.lr=3e-4)")
        body = arg[2:]
        if "=" in body:
            key, raw = body.split("=", 1)
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            key, raw = body, args[i + 1]
            i += 1
        else:
            key, raw = body, "true"
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"config key '{key}' conflicts with another override")
        node[parts[-1]] = value
        i += 1
    return out


def build_config(cls: type = RunConfig, files: list[str] | None = None,
                 overrides: dict[str, Any] | None = None) -> Any:
    """Defaults <- YAML files (in order) <- overrides, validated into `cls`."""
    data: dict[str, Any] = {}
    for path in files or []:
        loaded = load_yaml(path)
        if cls is RunConfig:  # a run's run_config.yaml is a config file too; its history is a record
            loaded.pop(HISTORY_KEY, None)
        data = merge(data, loaded)
    data = merge(data, overrides or {})
    return from_dict(cls, data)


def save_yaml(cfg: Any, path: str | Path, **extra: Any) -> None:
    """Write the resolved config (and `extra` top-level keys) atomically: a full disk or a
    kill leaves the previous file, never half of one."""
    text = yaml.safe_dump({**to_dict(cfg), **extra}, sort_keys=False, allow_unicode=True)
    write_text_atomic(path, text)
