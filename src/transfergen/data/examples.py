"""What a task reader returns, and the registry of readers.

`Example` and `TaskData` are the data; `register_reader` adds a reader that `load_task`
(`tasks.py`) calls by the name a task YAML gives. Readers for the real data sets
(`corpora.py`) and the generic ones (`tasks.py`) both build on the helpers here, so
neither imports the other's module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import Union

from ..config import TaskConfig
from ..errors import ConfigError, UserError
from .readers import iter_lines

SPLITS = ("train", "val", "test")


@dataclass
class Example:
    """One task example; `references` are all acceptable targets (default: [target])."""

    source: str
    target: str
    references: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # The training target is always one of the references scored against.
        if self.target not in self.references:
            self.references = [self.target, *self.references]


@dataclass
class TaskData:
    """A task's three splits."""

    train: list[Example]
    val: list[Example]
    test: list[Example]


ReaderResult = Union[TaskData, list[Example]]
Reader = Callable[[TaskConfig], ReaderResult]
READERS: dict[str, Reader] = {}
COLUMN_READERS: set[str] = set()  # readers that honour task.source_field / target_field / references_field


def register_reader(name: str, columns: bool = False) -> Callable[[Reader], Reader]:
    """Decorator: make `fn(cfg) -> TaskData | list[Example]` the reader called `name`;
    `columns`: it reads named columns, so the task's *_field keys apply to it."""
    def wrap(fn: Reader) -> Reader:
        READERS[name] = fn
        if columns:
            COLUMN_READERS.add(name)
        return fn
    return wrap


def make_example(source: str, target: str, references: list[str] | None = None, *,
                 path: str | Path, line: int | None = None) -> Example:
    """An `Example`, or `UserError` at path:line when the target is empty."""
    if not target.strip():
        raise UserError("empty target", path=str(path), line=line)
    refs = [r for r in (references or []) if r.strip()]
    return Example(source, target, refs)


def split_names(cfg: TaskConfig) -> dict[str, str]:
    """File name of each split: train/val/test unless `options.splits` renames one."""
    names = dict(zip(SPLITS, SPLITS, strict=True))
    renames = cfg.options.get("splits") or {}
    if not isinstance(renames, dict) or not set(renames) <= set(SPLITS):
        raise ConfigError(f"task.options.splits must map {'/'.join(SPLITS)} to names, got {renames!r}")
    names.update({k: str(v) for k, v in renames.items()})
    return names


def aligned_lines(paths: list[Path]) -> Iterator[tuple[int, tuple[str, ...]]]:
    """Yield (line_number, the line of each file) for files that must be line-aligned."""
    iters = [iter_lines(p) for p in paths]
    lineno = 0
    for rows in zip_longest(*iters):
        if any(r is None for r in rows):
            counts = [lineno + (r is not None) + sum(1 for _ in it) for r, it in zip(rows, iters, strict=True)]
            a, b = next((i, j) for i in range(len(paths)) for j in range(len(paths))
                        if counts[i] > counts[j])
            raise UserError(f"{paths[a].name} has {counts[a]} lines but {paths[b].name} has "
                            f"{counts[b]}", path=str(paths[a]), line=counts[b] + 1)
        lineno += 1
        yield lineno, tuple(line for _, line in rows)
