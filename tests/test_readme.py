"""The README's Python blocks run as written, against a tiny model standing in for runs/my-lm.

The shell blocks (the demo, studies) are exercised by their own tests with tiny budgets.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), re.S | re.M)


def test_readme_has_python_blocks():
    assert BLOCKS, "the README's Python API section should hold a ```python block"


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index, tiny_pretrained, tmp_path, monkeypatch, capsys):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "my-lm").symlink_to(tiny_pretrained, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    code = compile(BLOCKS[index], f"README.md, Python block {index + 1}", "exec")
    exec(code, {"__name__": "__readme__"})
    printed = capsys.readouterr().out
    if "print(" in BLOCKS[index]:
        assert printed.strip(), "the block prints something"
