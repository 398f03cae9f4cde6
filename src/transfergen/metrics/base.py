"""The score object and the input checks every metric shares.

Inputs are `(hypotheses, references)`: `hypotheses[i]` is a string and `references[i]`
the list of references for it (one or many; the count may differ per item; a bare
string is taken as a single reference).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import UserError

References = Sequence["Sequence[str] | str"]


@dataclass
class Score:
    """One metric's corpus figure, the settings that produced it and extra figures."""

    name: str
    score: float
    signature: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.name} = {self.score:.2f} ({self.signature})"


def _kind(x: object) -> str:
    return type(x).__name__


def check_inputs(hypotheses: Sequence[str], references: References) -> tuple[list[str], list[list[str]]]:
    """Validate and normalise to (list of str, list of non-empty lists of str)."""
    if isinstance(hypotheses, str) or not isinstance(hypotheses, Sequence):
        raise UserError(f"hypotheses must be a list of strings, not {_kind(hypotheses)}")
    if isinstance(references, str) or not isinstance(references, Sequence):
        raise UserError(f"references must be a list of reference lists, not {_kind(references)}")
    if len(hypotheses) != len(references):
        raise UserError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    if not hypotheses:
        raise UserError("nothing to score: no hypotheses")
    hyps: list[str] = []
    refs: list[list[str]] = []
    for i, (hyp, item) in enumerate(zip(hypotheses, references, strict=True), 1):
        if not isinstance(hyp, str):
            raise UserError(f"hypothesis {i} is {_kind(hyp)}, not str")
        item_refs = [item] if isinstance(item, str) else item
        if not isinstance(item_refs, Sequence):
            raise UserError(f"references of item {i} are {_kind(item)}, not a list of str")
        if len(item_refs) == 0:
            raise UserError(f"item {i} has no references")
        for r in item_refs:
            if not isinstance(r, str):
                raise UserError(f"a reference of item {i} is {_kind(r)}, not str")
        hyps.append(hyp)
        refs.append(list(item_refs))
    return hyps, refs


def ref_streams(references: list[list[str]]) -> list[list[str | None]]:
    """Per-item reference lists -> sacrebleu's reference streams.

    sacrebleu wants one stream per reference position, each as long as the
    hypotheses; items with fewer references are padded with None, which sacrebleu
    drops per segment (its documented way to express a variable number of references).
    """
    width = max(len(r) for r in references)
    return [[r[k] if k < len(r) else None for r in references] for k in range(width)]


def nrefs_label(references: list[list[str]]) -> str:
    """'5' when every item has five references, 'var' (as sacrebleu says) otherwise."""
    counts = {len(r) for r in references}
    return str(counts.pop()) if len(counts) == 1 else "var"
