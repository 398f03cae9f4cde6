"""A run's recorded configuration: what it started with, and what each resume changed.

`RUN/run_config.yaml` holds the resolved config the run started with, never rewritten,
followed by its `history`:

    history:
    - {event: start, step: 0, time: '2025-06-01 10:00:00'}
    - event: resume
      step: 200
      time: '2025-06-01 11:00:00'
      changed: {train.max_steps: [1000, 2000]}

A resume compares its resolved config with the run's: the start plus every recorded
change. Extending the budget and changing how often the run logs, evaluates and saves,
or how many threads it computes with, leave the trajectory so far as it is: such changes
are recorded. Anything else (model shape, tokenizer, data, batch, seq_len, seed, lr,
strategy, task, ...) would train a different run under the same name, and is refused
with one line that lists the keys.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

from .config import HISTORY_KEY, RunConfig, from_dict, load_yaml, save_yaml, to_dict
from .errors import ConfigError, UserError
from .io import write_text_atomic

CONFIG_FILE = "run_config.yaml"
# What a resume may change: the budget, the cadence of logs, evaluations and checkpoints,
# how the same numbers are computed (threads, activation recomputation, tokenizer processes, the cache's place) and
# where they are reported (trackers).
MAY_CHANGE = ("train.max_steps", "train.max_minutes", "train.log_every", "train.eval_every", "train.save_every",
              "train.keep_checkpoints", "train.threads",
              "train.activation_checkpointing", "data.num_workers", "data.cache_dir", "train.report_to")
# Not settings of the run: the folder is the run (however its path is spelled), and resume
# is how it was called.
NOT_COMPARED = ("out", "resume")


def flat_keys(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train.lr': 0.001, ...}: a nested config dict keyed by dotted config keys."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key != "options":  # task.options is one value
            out.update(flat_keys(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def record_start(cfg: RunConfig, run_dir: Path) -> None:
    """A fresh run: its resolved config and the first history entry."""
    save_yaml(cfg, run_dir / CONFIG_FILE, **{HISTORY_KEY: [{"event": "start", "step": 0, "time": _now()}]})


def _saved(run_dir: Path) -> tuple[dict[str, Any], list[dict], dict[str, Any]]:
    """(the file's config as written, its history, the run's current settings as flat keys)."""
    path = run_dir / CONFIG_FILE
    saved = load_yaml(path)
    history = saved.pop(HISTORY_KEY, None) or []
    try:
        current = flat_keys(to_dict(from_dict(RunConfig, saved)))
    except ConfigError as exc:
        raise UserError(f"cannot compare the resumed config with this run's: {exc}", path=str(path)) from None
    for entry in history:
        current.update({k: v[1] for k, v in (entry.get("changed") or {}).items()})
    return saved, history, current


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def record_resume(cfg: RunConfig, run_dir: Path, step: int) -> dict[str, list]:
    """Refuse drift that alters the trajectory; record the allowed changes as a new history
    entry (the start and earlier entries stay as written). Returns {key: [old, new]}."""
    if not (run_dir / CONFIG_FILE).is_file():  # a run from before configs were recorded
        record_start(cfg, run_dir)
        return {}
    saved, history, current = _saved(run_dir)
    new = flat_keys(to_dict(cfg))
    changed = {k: [current.get(k), v] for k, v in new.items() if k not in NOT_COMPARED and current.get(k) != v}
    refused = [k for k in changed if k not in MAY_CHANGE]
    if refused:
        shown = ", ".join(f"{k} ({_shown(changed[k][0])} -> {_shown(changed[k][1])})" for k in refused)
        raise UserError(f"--resume would change what this run trains: {shown}; resume with the settings in "
                        f"{CONFIG_FILE}, or start a new run with another --out (a resume may change only the "
                        "budget, the log/eval/save cadence and threads)", path=str(run_dir))
    entry = {"event": "resume", "step": step, "time": _now(), **({"changed": changed} if changed else {})}
    text = yaml.safe_dump({**saved, HISTORY_KEY: [*history, entry]}, sort_keys=False, allow_unicode=True)
    write_text_atomic(run_dir / CONFIG_FILE, text)
    return changed
