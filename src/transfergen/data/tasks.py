"""Generation tasks: (source, target) examples, a reader registry and seeded splits.

A task YAML (`configs/tasks/*.yaml`, a `TaskConfig`) names a `reader` and a `path`.
A reader takes the config and returns either a `TaskData` (the data comes pre-split)
or one list of `Example`s, which `load_task` splits with a seeded shuffle into
test (`test_size`), val (`val_size`) and train (the rest). A `TaskData` whose val or
test is empty gets that split held out of train the same way.

Generic readers: `jsonl`, `tsv` and `parallel` (below), and `csv`, `parquet`, `arrow`
and `hf` for column-oriented data (`table_readers.py`); readers for the real data sets
live in `corpora.py`. Paths may hold a `{split}` placeholder (train/val/test,
renamed per split with `options.splits`, e.g. `{test: test_2016_flickr}`) for data
that is already split. Every problem with the data raises `UserError` naming the
file and, where there is one, the line.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..checks import check_values
from ..config import TaskConfig, from_dict, load_yaml
from ..errors import ConfigError, UserError
from . import corpora, table_readers  # noqa: F401  (register the real data sets' and the table readers)
from .examples import (COLUMN_READERS, READERS, SPLITS, Example, ReaderResult, TaskData, aligned_lines,
                       make_example, register_reader, split_names)
from .readers import iter_json_objects, iter_lines

__all__ = ["READERS", "SPLITS", "Example", "TaskData", "check_task_config", "load_task", "load_task_file",
           "make_example", "register_reader", "split_examples", "task_file_keys"]

LOSS_ON = ("target", "all")


# ---------------------------------------------------------------------------
# paths and aligned files


def has_split_placeholder(cfg: TaskConfig) -> bool:
    """Whether `cfg.path` names pre-split data through a `{split}` placeholder."""
    return "{split}" in cfg.path


def read_splits(cfg: TaskConfig, read: Callable[[str], list[Example]]) -> TaskData:
    """TaskData from `read(path)` called on `cfg.path` with each split name filled in."""
    names = split_names(cfg)
    parts = {s: read(cfg.path.replace("{split}", names[s])) for s in SPLITS}
    return TaskData(**parts)


def existing_file(prefix: str | Path) -> Path:
    """`prefix` itself, or `prefix.gz` when only the compressed file exists."""
    p = Path(prefix)
    if p.is_file() or not Path(f"{p}.gz").is_file():
        return p  # a missing file is reported by iter_lines, naming the plain path
    return Path(f"{p}.gz")


# ---------------------------------------------------------------------------
# generic readers


def _jsonl_examples(path: str, cfg: TaskConfig) -> list[Example]:
    """{"source", "target", optional "references": [...]} per line (names: task.*_field);
    blank lines skipped."""
    out, src, tgt, ref = [], cfg.source_field, cfg.target_field, cfg.references_field
    for lineno, obj in iter_json_objects(path):
        for key in (src, tgt):
            if not isinstance(obj.get(key), str):
                what = "missing field" if key not in obj else "non-string field"
                raise UserError(f"{what} '{key}'", path=path, line=lineno)
        refs = obj.get(ref, [])
        if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
            raise UserError(f"field '{ref}' must be a list of strings", path=path, line=lineno)
        out.append(make_example(obj[src], obj[tgt], refs, path=path, line=lineno))
    return out


def _tsv_examples(path: str) -> list[Example]:
    """source<TAB>target[<TAB>more references...] per line; blank lines skipped."""
    out = []
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) < 2:
            raise UserError("expected source<TAB>target, found no tab", path=path, line=lineno)
        out.append(make_example(cols[0], cols[1], cols[2:], path=path, line=lineno))
    return out


def _parallel_examples(prefix: str, src: str, tgt: str) -> list[Example]:
    """Line i of PREFIX.src / PREFIX.tgt (each plain or .gz) is one example."""
    paths = [existing_file(f"{prefix}.{src}"), existing_file(f"{prefix}.{tgt}")]
    out = []
    for lineno, (s, t) in aligned_lines(paths):
        if s.strip() or t.strip():  # a line blank on both sides is padding, not data
            out.append(make_example(s, t, path=paths[1], line=lineno))
    return out


@register_reader("jsonl", columns=True)
def read_jsonl(cfg: TaskConfig) -> ReaderResult:
    """JSONL examples: one file to split, or `{split}` files."""
    if has_split_placeholder(cfg):
        return read_splits(cfg, lambda p: _jsonl_examples(p, cfg))
    return _jsonl_examples(cfg.path, cfg)


@register_reader("tsv")
def read_tsv(cfg: TaskConfig) -> ReaderResult:
    """Tab-separated examples: one file to split, or `{split}` files."""
    if has_split_placeholder(cfg):
        return read_splits(cfg, _tsv_examples)
    return _tsv_examples(cfg.path)


@register_reader("parallel")
def read_parallel(cfg: TaskConfig) -> ReaderResult:
    """Line-aligned files `path + '.' + options.src|tgt` (defaults src/tgt)."""
    src, tgt = str(cfg.options.get("src", "src")), str(cfg.options.get("tgt", "tgt"))
    if has_split_placeholder(cfg):
        return read_splits(cfg, lambda p: _parallel_examples(p, src, tgt))
    return _parallel_examples(cfg.path, src, tgt)


# ---------------------------------------------------------------------------
# splitting, validation, loading


def split_examples(examples: list[Example], n_test: int, n_val: int, seed: int,
                   what: str = "data") -> tuple[list[Example], list[Example], list[Example]]:
    """(rest, val, test): a seeded shuffle; test takes the first n_test, val the next n_val.

    Each part keeps the original order of its examples, so files stay easy to inspect.
    """
    n = len(examples)
    if n < n_test + n_val + 1:
        raise UserError(f"{what} has {n} examples, too few to hold out test_size={n_test} and "
                        f"val_size={n_val} and still train on at least one")
    perm = np.random.default_rng(seed).permutation(n)
    cuts = [perm[:n_test], perm[n_test:n_test + n_val], perm[n_test + n_val:]]
    test, val, rest = ([examples[i] for i in sorted(part.tolist())] for part in cuts)
    return rest, val, test


def check_task_config(cfg: TaskConfig, path: str | None = None) -> None:
    """Reject a task config that could only fail later (unknown reader or metric, bad prompt,
    a value out of range), naming `path` when given."""
    from ..metrics import check_metric_names  # lazily: the metrics' libraries load in seconds

    def bad(msg: str) -> ConfigError:
        return ConfigError(msg, path=path)
    try:
        check_values(cfg, "task.")
        check_metric_names(cfg.metrics, "task.metrics")
    except ConfigError as exc:
        raise bad(str(exc)) from None
    if cfg.reader not in READERS:
        raise bad(f"unknown task.reader '{cfg.reader}' (known: {', '.join(sorted(READERS))})")
    if not cfg.path:
        raise bad("task.path is empty (where is the task's data?)")
    if cfg.loss_on not in LOSS_ON:
        raise bad(f"task.loss_on must be one of {', '.join(LOSS_ON)}, got '{cfg.loss_on}'")
    try:
        cfg.prompt.format(source="")
    except (KeyError, IndexError, ValueError) as exc:
        raise bad(f"task.prompt {cfg.prompt!r} is not a valid template with {{source}} ({exc!r})") from None
    if "{source}" not in cfg.prompt:
        raise bad(f"task.prompt {cfg.prompt!r} must contain {{source}}")
    if any(f is not None and (spec or conv) for _, f, spec, conv in string.Formatter().parse(cfg.prompt)):
        raise bad(f"task.prompt {cfg.prompt!r}: write {{source}} without a conversion or format spec "
                  f"(the prompt format travels with the model as a chat template, which has neither)")
    _check_fields(cfg, bad)


def _check_fields(cfg: TaskConfig, bad: Callable[[str], ConfigError]) -> None:
    """Column names only mean something to readers of named columns: refuse them elsewhere."""
    defaults = TaskConfig()
    for key in ("source_field", "target_field", "references_field"):
        value = getattr(cfg, key)
        if value != getattr(defaults, key) and cfg.reader not in COLUMN_READERS:
            raise bad(f"task.{key} is set, but reader '{cfg.reader}' has no named columns "
                      f"(those that do: {', '.join(sorted(COLUMN_READERS))})")
        if not value:
            raise bad(f"task.{key} is empty")


def load_task(cfg: TaskConfig) -> TaskData:
    """Read the task's data with its reader and return the train/val/test splits."""
    check_task_config(cfg)
    data = READERS[cfg.reader](cfg)
    what = f"task '{cfg.name or cfg.reader}' ({cfg.path})"
    if not isinstance(data, TaskData):
        train, val, test = split_examples(list(data), cfg.test_size, cfg.val_size, cfg.split_seed, what)
        return TaskData(train, val, test)
    train, val, test = data.train, data.val, data.test
    # Missing splits come out of train: test first, then val, as for unsplit data.
    if not test or not val:
        train, new_val, new_test = split_examples(train, 0 if test else cfg.test_size,
                                                  0 if val else cfg.val_size, cfg.split_seed, what)
        val, test = val or new_val, test or new_test
    if not train:
        raise UserError(f"{what} has no training examples")
    return TaskData(train, val, test)


def task_file_keys(path: str | Path) -> dict[str, Any]:
    """The keys a task YAML sets (flat, or all under one `task:` section), validated, with
    `name` (default: the file's stem): what `--task FILE` merges over a config's `task:`."""
    data: dict[str, Any] = load_yaml(path)
    if set(data) == {"task"} and isinstance(data["task"], dict):
        data = data["task"]
    load_task_file(path)  # every check, naming the file
    return {**data, "name": data.get("name") or Path(path).stem}


def load_task_file(path: str | Path) -> TaskConfig:
    """A `TaskConfig` from a task YAML (flat keys, or all under one `task:` section).

    Unknown keys and wrongly typed values raise `ConfigError` naming the file and key;
    `name` defaults to the file's stem.
    """
    data: dict[str, Any] = load_yaml(path)
    if set(data) == {"task"} and isinstance(data["task"], dict):
        data = data["task"]
    try:
        cfg = from_dict(TaskConfig, data, prefix="task.")
    except ConfigError as exc:
        raise ConfigError(str(exc), path=str(path)) from None
    cfg.name = cfg.name or Path(path).stem
    check_task_config(cfg, path=str(path))
    return cfg

