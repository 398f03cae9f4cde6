"""Small file I/O shared by the loop, evaluation and studies: atomic text, metrics.jsonl,
and the refusal of model folders that ask to run their own code.

No torch at import time: the study report reads these files without loading a model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import UserError

METRICS_FILE = "metrics.jsonl"
TRACKING_FILE = "tracking.json"  # the W&B / MLflow run ids a resume continues (tracking.py)
# The files in which a Hugging Face folder can map a class to Python code it ships (`auto_map`).
CODE_MAPS = ("config.json", "tokenizer_config.json", "processor_config.json", "preprocessor_config.json")
# A jieba tokenizer's folder maps AutoTokenizer to the copy of transfergen's class it carries, for
# plain transformers (`jieba_tokenizer.py`); transfergen loads its own installed class instead.
OWN_AUTO_MAP = {"AutoTokenizer": [None, "jieba_tokenizer.JiebaBPETokenizerFast"]}


def read_lines(given: list[str], path: str | None, what: str) -> list[str]:
    """`given`, then the lines of the UTF-8 file at `path` (when set); UserError naming it."""
    lines = list(given)
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                lines += f.read().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read {what}: {exc}", path=path) from None
    return lines


def write_text_atomic(path: str | Path, text: str) -> None:
    """Replace `path` with `text` in one step: readers see the old file or the new, never half."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")  # hidden, and matched by checkpoint.TEMPORARIES
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """`obj` as indented UTF-8 JSON, written atomically."""
    write_text_atomic(path, json.dumps(obj, indent=1, ensure_ascii=False) + "\n")


def refuse_custom_code(folder: str | Path) -> None:
    """transformers would import Python files shipped in a model folder whose config maps a class
    to them (`auto_map`), after asking on stdin; transfergen never runs such code. One line,
    before anything of the folder is loaded (`trust_remote_code=False` is passed as well).
    Our own jieba tokenizer's map passes: transfergen runs its installed class, not the folder's."""
    for name in CODE_MAPS:
        path = Path(folder) / name
        try:
            data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue  # unreadable: the loader reports it, naming the file
        if isinstance(data, dict) and data.get("auto_map") and data["auto_map"] != OWN_AUTO_MAP:
            classes = ", ".join(sorted(data["auto_map"])) if isinstance(data["auto_map"], dict) else "?"
            raise UserError(f"the folder asks to run its own Python code (auto_map: {classes}); transfergen "
                            "never runs code from a model folder", path=str(path))


def read_json(path: str | Path) -> Any:
    """The JSON value in `path` (UTF-8)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _records(text: str) -> list[dict]:
    """The records of a metrics.jsonl text. A kill in the middle of an append can leave the last
    line torn; that record was never complete, so it is dropped (a torn line elsewhere is an error)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    out = []
    for i, line in enumerate(lines):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                raise
    return out


def read_metrics(run_dir: str | Path) -> list[dict]:
    """Every record of a run's metrics.jsonl, in order ([] without one)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    return _records(path.read_text(encoding="utf-8"))


class MetricsLog:
    """metrics.jsonl, and the trackers of `train.report_to` (tracking.py), written by rank 0 only."""

    def __init__(self, run_dir: Path, enabled: bool, truncate_after: int | None = None,
                 report_to: list[str] | None = None):
        from .tracking import open_trackers

        self.path = run_dir / METRICS_FILE
        self.enabled = enabled
        self.trackers: list = []
        if not enabled:
            return
        if truncate_after is None:  # a fresh run: drop records of an earlier, checkpoint-less try
            self.path.unlink(missing_ok=True)
        else:
            self._truncate(truncate_after)
        ids_path = run_dir / TRACKING_FILE
        ids = read_json(ids_path) if ids_path.is_file() else {}
        self.trackers = open_trackers(report_to or [], run_dir, ids, resumed=truncate_after is not None)
        if ids:
            write_json_atomic(ids_path, ids)

    def _truncate(self, step: int) -> None:
        """On resume, drop records past the checkpoint so curves have no duplicate steps."""
        if not self.path.exists():
            return
        keep = [rec for rec in _records(self.path.read_text(encoding="utf-8")) if rec.get("step", 0) <= step]
        write_text_atomic(self.path, "".join(json.dumps(rec) + "\n" for rec in keep))

    def write(self, record: dict) -> None:
        """Append one record (a JSON line); its numbers also go to every tracker."""
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.trackers and "step" in record:
            from .tracking import numbers

            values = numbers(record)
            for tracker in self.trackers:
                tracker.log(values, int(record["step"]))

    def close(self) -> None:
        """Finish every tracker run (metrics.jsonl needs no closing)."""
        for tracker in self.trackers:
            tracker.close()
        self.trackers = []
