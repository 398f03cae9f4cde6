"""Config fields as command-line help, and the sections a command refuses.

Split from config.py, which holds the schema and its parsing: these two are what the
command line shows and checks (`--help` lists every `--section.key=DEFAULT`; `pretrain`
refuses a `--strategy.*` it would ignore).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Sequence
from typing import Any

import yaml

from .checks import describe
from .config import field_default, to_dict
from .errors import ConfigError


def _flag_value(value: Any) -> str:
    """A default as it would be typed after `--key=` (YAML flow style)."""
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def flag_help(cls: type, sections: Sequence[str] | None = None, prefix: str = "") -> list[str]:
    """`--section.key=DEFAULT  help` for every field of `cls` (or of `sections` of it),
    nested dataclasses expanded: the `--help` of the commands that take these flags."""
    hints, rows = typing.get_type_hints(cls), []
    for f in dataclasses.fields(cls):
        if sections is not None and f.name not in sections:
            continue
        if dataclasses.is_dataclass(hints[f.name]):
            rows += flag_help(hints[f.name], None, f"{prefix}{f.name}.")
            continue
        owner, doc = f.metadata.get("strategy"), f.metadata.get("help", "") + describe(f.metadata.get("check"))
        rows.append(f"  --{prefix}{f.name}={_flag_value(field_default(f))}".ljust(40) + "  "
                    + (f"[{owner}] {doc}" if owner else doc))
    return rows


def check_sections(cfg: Any, used: Sequence[str], command: str) -> None:
    """Refuse a section a command ignores when anything in it differs from the defaults
    (e.g. `--strategy.*` given to pretrain), naming the first such key."""
    for f in dataclasses.fields(cfg):
        if f.name in used:
            continue
        given, default = getattr(cfg, f.name), field_default(f)
        if given != default:
            keys = [k for k in to_dict(given) if to_dict(given)[k] != to_dict(default)[k]] \
                if dataclasses.is_dataclass(given) else [""]
            key = f"{f.name}.{keys[0]}" if keys[0] else f.name
            raise ConfigError(f"config key '{key}' is set, but {command} does not use {f.name}")
