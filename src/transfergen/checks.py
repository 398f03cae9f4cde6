"""Range checks that config fields carry next to their help text.

    batch_size: int = opt(16, "sequences per micro-batch", check=at_least(1))

A check is a function `value -> problem | None`; `check_field` runs a field's check and
raises a one-line `ConfigError` naming the key, e.g.
`config key 'train.lr': must be > 0, got -1.0`. `None` always passes (a null optional
field means "off" or "take the default"). Checks that need a registry (strategy names,
metric names, the device) live with the registry and are run by `preflight.py`.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any

from .errors import ConfigError

Check = Callable[[Any], "str | None"]


def rule(text: str, ok: Callable[[Any], bool]) -> Check:
    """A check from its rule as read ('>= 1') and its predicate; `--help` shows the rule."""
    def check(value: Any) -> str | None:
        return None if ok(value) else f"must be {text}"
    check.rule = text  # type: ignore[attr-defined]
    return check


def at_least(low: float) -> Check:
    """value >= low (counts: at_least(1); sizes that may be off: at_least(0))."""
    return rule(f">= {low}", lambda v: v >= low)


def above(low: float) -> Check:
    """value > low (rates, scales, epsilons)."""
    return rule(f"> {low}", lambda v: v > low)


def within(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Check:
    """value in [low, high], either end open on request (fractions, betas, dropout)."""
    text = f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    return rule(text, lambda v: (low < v if low_open else low <= v) and (v < high if high_open else v <= high))


def one_of(*choices: str) -> Check:
    """One of the named values (where the names live in this file, not in a registry)."""
    return rule(f"one of {', '.join(choices)}", lambda v: v in choices)


nonempty = rule("a non-empty list", lambda v: len(v) > 0)


def each(check: Check, *, allow_empty: bool = True) -> Check:
    """Apply `check` to every item of a list (None items pass, as for plain fields)."""
    def run(v: list) -> str | None:
        if not allow_empty and not v:
            return "must not be empty"
        for item in v:
            problem = None if item is None else check(item)
            if problem is not None:
                return f"every item {problem}"
        return None
    run.rule = ("" if allow_empty else "non-empty, ") + f"each {check.rule}"  # type: ignore[attr-defined]
    return run


def describe(check: Check | None) -> str:
    """The rule of a field's check as `--help` prints it ('' without one)."""
    text = getattr(check, "rule", None)
    return f" ({text})" if text else ""


def flag_type(kind: Callable[[str], Any], check: Check) -> Callable[[str], Any]:
    """An argparse `type` that parses a flag's value and range-checks it where the flag is defined
    (`--temperature`: flag_type(float, at_least(0)))."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__ if kind is not int else 'an integer'}, "
                                             f"got {text!r}") from None
        problem = check(value)
        if problem is not None:
            raise argparse.ArgumentTypeError(f"{problem}, got {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its own messages
    return parse


def check_field(f: dataclasses.Field, value: Any, key: str) -> None:
    """Run field `f`'s `check` metadata on `value`; ConfigError naming `key` when it fails."""
    check = f.metadata.get("check")
    if check is None or value is None:
        return
    problem = check(value)
    if problem is not None:
        raise ConfigError(f"config key '{key}': {problem}, got {value!r}")


def check_values(cfg: Any, prefix: str = "") -> None:
    """Every field check of dataclass `cfg` and its nested sections (for configs built in
    code rather than through `from_dict`, which checks as it reads)."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            check_values(value, f"{prefix}{f.name}.")
        else:
            check_field(f, value, prefix + f.name)


def device_flag(p: argparse.ArgumentParser) -> None:
    """Add `--device` to a command that loads a model (`distributed.resolve_device` checks it)."""
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU) | cpu | cuda | cuda:N | mps")
