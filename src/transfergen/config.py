"""Typed run configuration, mirrored one-to-one by YAML and `--section.key=value` flags.

The dataclasses below are the single source of truth: `configs/*.yaml` hold the same
keys, and every field can be overridden on the command line as `--train.lr=3e-4`.
Unknown keys and values of the wrong type fail with a one-line `ConfigError` that
names the key, before any work starts.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from .errors import ConfigError


@dataclass
class ModelConfig:
    """Decoder-only transformer shape. `None` fields take the preset's value."""

    preset: str = "small"  # tiny (~1M) | small (~5M) | base (~25M) non-embedding params
    like: str | None = None  # copy the shape of this model folder (scratch baselines)
    n_layer: int | None = None
    d_model: int | None = None
    n_head: int | None = None
    n_kv_head: int | None = None  # < n_head gives grouped-query attention
    d_ff: int | None = None
    max_seq_len: int | None = None
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    init_std: float = 0.02


@dataclass
class TokenizerConfig:
    """Byte-level BPE trained on the corpus, or an existing tokenizer folder."""

    path: str | None = None  # a local HF tokenizer/checkpoint folder; None trains one
    vocab_size: int = 8192
    min_frequency: int = 2
    jieba: bool = False  # pre-segment Chinese with jieba so merges respect word boundaries
    max_train_docs: int = 200_000  # BPE statistics converge long before the corpus ends


@dataclass
class DataConfig:
    """Where the text comes from and how it is split and cached."""

    corpus: list[str] = field(default_factory=list)
    format: str = "auto"  # auto | text | jsonl  (auto: by file extension)
    text_field: str = "text"  # the JSONL field holding the document
    doc_sep: str = "line"  # line: a document per line | blank: blank-line separated
    val_fraction: float = 0.02
    cache_dir: str | None = None  # default: <out>/data
    num_workers: int = 2


@dataclass
class TrainConfig:
    """The one training loop's knobs (pretraining, fine-tuning and scratch baselines)."""

    max_steps: int = 1000
    max_minutes: float | None = None  # stop (and checkpoint) once this wall time is spent
    batch_size: int = 16
    seq_len: int = 256
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    schedule: str = "exponential"  # exponential | cosine | constant (after warmup)
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1  # the multiplier reached at max_steps
    grad_clip: float | None = 1.0  # global-norm clipping; None disables
    dtype: str = "auto"  # auto (bf16 where the hardware has it, else fp32) | fp32 | bf16 | fp16 (CUDA)
    device: str = "auto"  # auto | cpu | cuda
    seed: int = 1337
    log_every: int = 10
    eval_every: int = 100
    eval_batches: int = 8
    eval_at_start: bool = False  # also evaluate before the first step (curves start at step 0)
    save_every: int = 200
    keep_checkpoints: int = 2
    threads: int | None = None  # torch intra-op threads; None keeps torch's default
    max_examples: int | None = None  # fine-tuning: a fixed subset (seeded by task.split_seed)
    best_metric: str | None = None  # keep RUN/best/ by this eval number (val_loss, bleu, ...)
    patience: int = 0  # stop after this many evals without a new best (0: never)


@dataclass
class TaskConfig:
    """A generation task: where its data is, how a prompt looks, how it is scored.

    Declared in `configs/tasks/*.yaml`; `reader` names a registered reader (jsonl,
    tsv, parallel, or one for a known data set) and `path` is what it reads.
    """

    name: str = ""
    reader: str = "jsonl"
    path: str = ""
    options: dict = field(default_factory=dict)  # reader-specific (e.g. languages, direction)
    source_lang: str = "en"
    target_lang: str = "en"
    prompt: str = "{source}"  # the text before the separator; {source} is the input
    metrics: list[str] = field(default_factory=lambda: ["bleu"])
    val_size: int = 500  # held out from train when the data has no val split
    test_size: int = 1000  # held out when the data has no test split
    split_seed: int = 0
    max_source_tokens: int = 192  # longer prompts are cut from the end (counted in the log)
    max_target_tokens: int = 64  # longer targets are cut from the end (counted in the log)
    loss_on: str = "target"  # target | all  (which tokens the loss covers)


@dataclass
class StrategyConfig:
    """Knowledge selection for transfer. `name` joins registry entries with '+', e.g.
    `reinit+discriminative`; each entry reads only its own options below."""

    name: str = "full"
    freeze_embeddings: bool = False  # freeze: the input embedding (and the tied head)
    freeze_bottom: int = 0  # freeze: the bottom k blocks
    train_top: int | None = None  # freeze: everything but the top k blocks, final norm and head
    unfreeze_every: int = 100  # gradual: one more block from the top every K steps
    lr_decay: float = 0.8  # discriminative: lr x decay**(distance from the top)
    reinit_top: int = 1  # reinit: re-initialise the top k blocks
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    lora_lr: float | None = None  # LoRA adapters' lr; None = train.lr
    l2sp_alpha: float = 0.01  # l2sp: strength of the pull towards pretrained weights


@dataclass
class VocabConfig:
    """Adjusting the input/output layers when the target needs tokens the model lacks."""

    extend_from: list[str] = field(default_factory=list)  # target-side corpus files
    add: int = 0  # how many new tokens to learn and add


@dataclass
class EvalConfig:
    """Generation-based evaluation: during fine-tuning and in `transfergen evaluate`."""

    generate: bool = False  # fine-tuning: also decode + score the val subset at each evaluation
    examples: int = 200  # the fixed validation subset decoded during training
    num_beams: int = 1
    max_new_tokens: int = 64
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    repetition_penalty: float = 1.0
    batch_size: int = 32


@dataclass
class RunConfig:
    """Everything a run needs. `init` is `scratch` or a path to a pretrained model."""

    out: str = "runs/default"
    init: str = "scratch"
    resume: bool = False
    model: ModelConfig = field(default_factory=ModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    vocab: VocabConfig = field(default_factory=VocabConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


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
    """Build dataclass `cls` from a nested dict, rejecting unknown keys."""
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{prefix.rstrip('.') or '<root>'}' must be a mapping")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise ConfigError(f"unknown config key '{prefix}{key}' (known: {', '.join(sorted(names))})")
    kwargs = {}
    for key, value in data.items():
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = from_dict(tp, value or {}, prefix=f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, tp, prefix + key)
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
        data = merge(data, load_yaml(path))
    data = merge(data, overrides or {})
    return from_dict(cls, data)


def save_yaml(cfg: Any, path: str | Path) -> None:
    """Write the resolved config next to the run, so every run is reproducible."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True), encoding="utf-8")
