"""Task readers for column-oriented data: `csv`, `parquet`, `arrow` and `hf` (see `tables.py`).

Each row is one example: `task.source_field` -> `task.target_field`, with the optional
`task.references_field` (a list of strings, or one string; in CSV a JSON list or one string)
adding references. Splits come from the data where it has them: `{split}` in the path
(e.g. `data/{split}-*.parquet`), or the splits of a `DatasetDict` folder (`val` also found as
`validation`, `valid` or `dev`; `options.splits` renames). A file without splits, or a
`DatasetDict` missing val or test, gets the seeded split of `load_task`. An empty split, a
missing column, a column of the wrong type or a null cell stops with `FILE: problem`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..config import TaskConfig
from ..errors import UserError
from .examples import SPLITS, Example, ReaderResult, TaskData, register_reader, split_names
from .tables import Column, expand_paths, iter_rows

DEFAULT_REFERENCES = "references"  # TaskConfig.references_field's default: optional when absent
VAL_ALIASES = ("val", "validation", "valid", "dev")


def task_columns(cfg: TaskConfig) -> list[Column]:
    """The source, target and references columns the task's *_field keys name."""
    return [Column(cfg.source_field, "text", True, "task.source_field"),
            Column(cfg.target_field, "text", True, "task.target_field"),
            Column(cfg.references_field, "texts", cfg.references_field != DEFAULT_REFERENCES,
                   "task.references_field")]


def _row_example(path: Path, n: int, row: dict[str, Any], cfg: TaskConfig) -> Example:
    """One row as an Example; null cells and empty targets name the file and row."""
    for key in (cfg.source_field, cfg.target_field):
        if row[key] is None:
            raise UserError(f"row {n}: column '{key}' is null", path=str(path))
    refs = row.get(cfg.references_field)
    refs = [] if refs is None else [refs] if isinstance(refs, str) else refs
    if not all(isinstance(r, str) for r in refs):
        raise UserError(f"row {n}: column '{cfg.references_field}' holds a null reference", path=str(path))
    if not row[cfg.target_field].strip():
        raise UserError(f"row {n}: empty target (column '{cfg.target_field}')", path=str(path))
    return Example(row[cfg.source_field], row[cfg.target_field], [r for r in refs if r.strip()])


def table_examples(path: str, fmt: str, cfg: TaskConfig, split: str | None = None) -> list[Example]:
    """Every row of `path` (a file, a glob of shards or a datasets folder) as an Example."""
    columns, out = task_columns(cfg), []
    for file in expand_paths(path):
        out += [_row_example(file, n, row, cfg) for n, row in iter_rows(file, fmt, columns)]
    if not out:
        raise UserError(f"split '{split}' is empty" if split else "no rows", path=path)
    return out


def _read(cfg: TaskConfig, fmt: str) -> ReaderResult:
    """One file to split, or `{split}` files, each read as `fmt`."""
    if "{split}" not in cfg.path:
        return table_examples(cfg.path, fmt, cfg)
    names = split_names(cfg)
    return TaskData(**{s: table_examples(cfg.path.replace("{split}", names[s]), fmt, cfg, s) for s in SPLITS})


@register_reader("csv", columns=True)
def read_csv(cfg: TaskConfig) -> ReaderResult:
    """CSV with a header row (plain or .gz)."""
    return _read(cfg, "csv")


@register_reader("parquet", columns=True)
def read_parquet(cfg: TaskConfig) -> ReaderResult:
    """Parquet file(s); a glob reads shards in name order."""
    return _read(cfg, "parquet")


@register_reader("arrow", columns=True)
def read_arrow(cfg: TaskConfig) -> ReaderResult:
    """Arrow IPC file(s) or stream(s)."""
    return _read(cfg, "arrow")


def dict_splits(folder: Path) -> list[str] | None:
    """The split names of a DatasetDict folder (its dataset_dict.json), None for a Dataset folder."""
    index = folder / "dataset_dict.json"
    if not index.is_file():
        return None
    try:
        splits = json.loads(index.read_text(encoding="utf-8"))["splits"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"unreadable dataset_dict.json ({exc})", path=str(index)) from None
    return [str(s) for s in splits]


@register_reader("hf", columns=True)
def read_hf(cfg: TaskConfig) -> ReaderResult:
    """A `save_to_disk` folder: a Dataset (split here) or a DatasetDict (its own splits)."""
    folder = Path(cfg.path)
    splits = None if "{split}" in cfg.path else dict_splits(folder)
    if splits is None:  # a Dataset folder, or `{split}` folders
        return _read(cfg, "hf")
    names = split_names(cfg)
    if "val" not in (cfg.options.get("splits") or {}):
        names["val"] = next((a for a in VAL_ALIASES if a in splits), "val")
    if names["train"] not in splits:
        raise UserError(f"no '{names['train']}' split (the splits are: {', '.join(splits)}; "
                        f"task.options.splits renames)", path=str(folder))
    parts = {s: table_examples(str(folder / names[s]), "hf", cfg, names[s]) if names[s] in splits else []
             for s in SPLITS}
    return TaskData(**parts)
