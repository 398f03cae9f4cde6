"""Column-oriented data, streamed: CSV, Parquet, Arrow and Hugging Face `datasets` folders.

Task readers (`table_readers.py`) and corpora (`readers.py`) both read rows through
`iter_rows`, which yields `(row number, {column: value})` for the columns asked for and
holds one record batch (CSV: one row) in memory at a time, so files larger than RAM stream.

- `csv`: a header row, then one example / document a row (plain or `.gz`, strict UTF-8);
- `parquet`: read by row group / record batch with pyarrow;
- `arrow`: an Arrow IPC file or stream (`.arrow`, `.feather`; `datasets` caches are streams);
- `hf`: a folder written by `Dataset.save_to_disk` (memory-mapped by `datasets`); a
  `DatasetDict` folder holds one such folder per split (`dataset_dict.json` lists them).

Columns are checked against the schema before any row is read: a missing column or one of
the wrong type stops with `FILE: problem`. pyarrow and datasets are optional (the `data`
extra); a missing one is reported with the one-line install command.
"""

from __future__ import annotations

import csv
import glob
import gzip
import importlib
import io
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import UserError

TABLE_FORMATS = ("csv", "parquet", "arrow", "hf")
INSTALL_HINT = "pip install 'transfergen[data]'"
BATCH_ROWS = 1024  # rows per Arrow record batch read: bounded memory, amortised overhead
_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".arrow": "arrow", ".feather": "arrow"}


@dataclass(frozen=True)
class Column:
    """A column to read: `kind` 'text' (a string) or 'texts' (a list of strings, or one string);
    `key` is the config key that named it, quoted in errors."""

    name: str
    kind: str = "text"
    required: bool = True
    key: str = ""


def table_format(path: str | Path) -> str | None:
    """'csv' | 'parquet' | 'arrow' by extension (.gz allowed for CSV), 'hf' for a folder."""
    p = Path(path)
    if p.is_dir():
        return "hf"
    name = p.name.lower().removesuffix(".gz")
    return _SUFFIXES.get(Path(name).suffix)


def optional_module(name: str, fmt: str, path: str | Path) -> ModuleType:
    """Import `name` (pyarrow, datasets) or stop with the one-line install command."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise UserError(f"reading {fmt} data needs the '{name}' package: {INSTALL_HINT}",
                        path=str(path)) from None


def check_table(path: str | Path, fmt: str) -> None:
    """Before any work: the file (or a `datasets` folder) is there, and so is the package its
    format needs; what is wrong inside it is found when it is read."""
    p = Path(path)
    if fmt == "hf":
        if not p.is_dir():
            raise UserError("not a folder saved with datasets' save_to_disk", path=str(p))
        optional_module("datasets", fmt, p)
        return
    if not p.is_file():
        raise UserError("file not found" if not p.exists() else "not a regular file", path=str(p))
    if fmt in ("parquet", "arrow"):
        optional_module("pyarrow.parquet" if fmt == "parquet" else "pyarrow", fmt, p)


def expand_paths(path: str) -> list[Path]:
    """The files a path names: itself, or the sorted matches of a glob (parquet shards)."""
    if not any(c in path for c in "*?["):
        return [Path(path)]
    found = sorted(Path(p) for p in glob.glob(path))
    if not found:
        raise UserError("no files match this pattern", path=path)
    return found


def iter_rows(path: str | Path, fmt: str, columns: list[Column]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based row number, {column: value}) for each row; absent optional columns are left out."""
    p = Path(path)
    check_table(p, fmt)
    if fmt == "csv":
        yield from _csv_rows(p, columns)
    elif fmt == "hf":
        yield from _arrow_rows(p, _hf_batches(p, columns), columns)
    elif fmt in ("parquet", "arrow"):
        yield from _arrow_rows(p, (_parquet_batches if fmt == "parquet" else _ipc_batches)(p, columns), columns)
    else:
        raise UserError(f"unknown table format '{fmt}' (expected one of: {', '.join(TABLE_FORMATS)})")


# ---------------------------------------------------------------------------
# CSV (standard library: no extra needed)


def _csv_rows(path: Path, columns: list[Column]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows of a CSV file with a header; a references cell may hold a JSON list of strings."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # documents can exceed the 128 KiB default
    raw = gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")
    with raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader, None)
            if header is None:
                raise UserError("empty CSV file (no header row)", path=str(path))
            index = _check_columns(path, header, columns)
            for n, cells in enumerate(reader, start=1):
                if len(cells) != len(header):
                    raise UserError(f"row {n} has {len(cells)} fields, the header {len(header)}",
                                    path=str(path), line=reader.line_num)
                yield n, {c.name: _csv_value(cells[i], c) for c, i in index.items()}
        except UnicodeDecodeError as exc:
            raise UserError(f"not valid UTF-8 (byte 0x{exc.object[exc.start]:02x}) near line "
                            f"{reader.line_num + 1}", path=str(path)) from None
        except (csv.Error, OSError, EOFError) as exc:
            raise UserError(f"cannot parse CSV near line {reader.line_num}: {exc}", path=str(path)) from None


def _csv_value(cell: str, col: Column) -> Any:
    """A CSV cell as the column's kind: 'texts' takes a JSON list of strings, else one string."""
    if col.kind == "texts" and cell.startswith("["):
        try:
            value = json.loads(cell)
        except json.JSONDecodeError:
            return cell
        return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else cell
    return cell


def _check_columns(path: Path, names: list[str], columns: list[Column]) -> dict[Column, int]:
    """Position of each wanted column in `names`; a required one missing stops here."""
    index = {}
    for col in columns:
        if col.name in names:
            index[col] = names.index(col.name)
        elif col.required:
            key = f" ({col.key})" if col.key else ""
            raise UserError(f"no column '{col.name}'{key}; the columns are: {', '.join(map(str, names))}",
                            path=str(path))
    return index


# ---------------------------------------------------------------------------
# Arrow-backed formats: parquet, Arrow IPC, datasets folders


def _parquet_batches(path: Path, columns: list[Column]) -> Iterator[Any]:
    """The schema, then record batches of the wanted columns, row group by row group."""
    pq = optional_module("pyarrow.parquet", "parquet", path)
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ... for a bad file
        raise UserError(f"not a readable Parquet file ({_first_line(exc)})", path=str(path)) from None
    yield pf.schema_arrow
    names = [c.name for c in columns if c.name in pf.schema_arrow.names]
    yield from pf.iter_batches(batch_size=BATCH_ROWS, columns=names)


def _ipc_batches(path: Path, columns: list[Column]) -> Iterator[Any]:
    """The schema, then record batches of an Arrow IPC file (random access) or stream."""
    pa = optional_module("pyarrow", "arrow", path)
    source = pa.memory_map(str(path))
    try:
        reader = pa.ipc.open_file(source)
        batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
    except pa.ArrowInvalid:  # not the file format: try the stream format (datasets' cache files)
        try:
            source.seek(0)
            reader = pa.ipc.open_stream(source)
        except pa.ArrowInvalid as exc:
            raise UserError(f"not an Arrow IPC file or stream ({_first_line(exc)})", path=str(path)) from None
        batches = iter(reader)
    yield reader.schema
    yield from batches


def _hf_batches(path: Path, columns: list[Column]) -> Iterator[Any]:
    """The schema, then record batches of a `save_to_disk` Dataset folder (memory-mapped);
    None for a saved empty dataset, which has no Arrow shard to take a schema from."""
    if _saved_shards(path) == 0:  # load_from_disk fails on these (datasets 5.2): report them as empty
        yield None
        return
    ds = load_hf(path)
    if isinstance(ds, dict):  # a DatasetDict
        raise UserError("a DatasetDict folder: name one split's folder (e.g. PATH/train)", path=str(path))
    yield ds.data.schema
    names = [c.name for c in columns if c.name in ds.column_names]
    yield from ds.select_columns(names).with_format("arrow").iter(batch_size=BATCH_ROWS)


def _saved_shards(path: Path) -> int | None:
    """How many Arrow shards a Dataset folder's state.json lists (None: no readable state.json)."""
    try:
        return len(json.loads((path / "state.json").read_text(encoding="utf-8"))["_data_files"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_hf(path: Path) -> Any:
    """`datasets.load_from_disk(path)`: a Dataset or a DatasetDict; errors name the folder."""
    if not path.is_dir():
        raise UserError("not a folder saved with datasets' save_to_disk", path=str(path))
    datasets = optional_module("datasets", "hf", path)
    try:
        return datasets.load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001 - FileNotFoundError, JSON errors, Arrow errors
        raise UserError(f"not a datasets save_to_disk folder ({_first_line(exc)})", path=str(path)) from None


def _arrow_rows(path: Path, batches: Iterator[Any], columns: list[Column]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Check the schema (first item of `batches`), then yield rows batch by batch."""
    schema = next(batches)
    if schema is None:
        return
    wanted = _check_columns(path, list(schema.names), columns)
    for col in wanted:
        _check_type(path, col, schema.field(col.name).type)
    n = 0
    for batch in batches:
        for row in batch.to_pylist():
            n += 1
            yield n, {c.name: row[c.name] for c in wanted}


def _check_type(path: Path, col: Column, dtype: Any) -> None:
    """A 'text' column must hold strings; a 'texts' column lists of strings (or strings)."""
    import pyarrow as pa

    def is_str(t: Any) -> bool:
        if pa.types.is_dictionary(t):
            t = t.value_type
        return pa.types.is_string(t) or pa.types.is_large_string(t) or str(t) == "string_view"

    is_list = pa.types.is_list(dtype) or pa.types.is_large_list(dtype) or pa.types.is_fixed_size_list(dtype)
    ok = is_str(dtype) or (col.kind == "texts" and is_list and is_str(dtype.value_type))
    if not ok:
        want = "strings" if col.kind == "text" else "lists of strings (or strings)"
        key = f" ({col.key})" if col.key else ""
        raise UserError(f"column '{col.name}'{key} holds {dtype}, expected {want}", path=str(path))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
