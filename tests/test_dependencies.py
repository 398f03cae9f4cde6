"""The dependency ranges: parity-critical packages are bounded above, and `make test-min`'s
pins (constraints/lowest.txt) are exactly pyproject's lower bounds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.version import Version

tomllib = pytest.importorskip("tomllib", reason="Python < 3.11 has no tomllib")

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
SPEC = re.compile(r"^([A-Za-z0-9_.-]+)\s*(.*)$")


def ranges(specs: list[str]) -> dict[str, str]:
    """{normalised name: version specifiers} of requirement strings (self-references skipped)."""
    out = {}
    for spec in specs:
        name, rest = SPEC.match(spec.split(";")[0].strip()).groups()
        if not name.startswith("transfergen"):
            out[name.lower().replace("_", "-")] = rest.replace(" ", "")
    return out


def test_parity_critical_dependencies_have_upper_bounds():
    core = ranges(PROJECT["dependencies"])
    for name in ("transformers", "peft", "sacrebleu", "rouge-score"):
        assert "<" in core[name], f"{name} needs an upper bound ({core[name]})"


def test_lowest_pins_are_the_lower_bounds():
    wanted = {**ranges(PROJECT["dependencies"]), **ranges(PROJECT["optional-dependencies"]["data"])}
    wanted.pop("torch")  # the CPU wheel: PyPI's older torch wheels are CUDA builds
    pins = dict(line.split("==") for line in (ROOT / "constraints" / "lowest.txt").read_text().splitlines()
                if line.strip() and not line.startswith("#"))
    lows = {name: Version(re.search(r">=([^,]+)", spec)[1]) for name, spec in wanted.items()}
    assert {k.lower(): Version(v) for k, v in pins.items()} == lows


def test_accelerate_is_an_extra_of_its_own():
    extras = PROJECT["optional-dependencies"]
    assert "accelerate" not in ranges(PROJECT["dependencies"]) and "accelerate" in ranges(extras["bench"])
    assert all("accelerate" not in ranges(v) for k, v in extras.items() if k != "bench")
