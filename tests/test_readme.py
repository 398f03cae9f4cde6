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


def run_block(index: int, pretrained: Path, finetuned: Path, tmp_path: Path, monkeypatch, capsys) -> str:
    """Run README Python block `index` in tmp_path, runs/my-lm and runs/my-ft standing in; its output."""
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "my-lm").symlink_to(pretrained, target_is_directory=True)
    (tmp_path / "runs" / "my-ft").symlink_to(finetuned, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    code = compile(BLOCKS[index], f"README.md, Python block {index + 1}", "exec")
    exec(code, {"__name__": "__readme__"})
    return capsys.readouterr().out


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index, tiny_pretrained, tiny_finetuned, tmp_path, monkeypatch, capsys):
    printed = run_block(index, tiny_pretrained, tiny_finetuned, tmp_path, monkeypatch, capsys)
    if "print(" in BLOCKS[index]:
        assert printed.strip(), "the block prints something"


def test_readme_transformers_prompting_matches_transfergen_generate(tiny_pretrained, tiny_finetuned, tmp_path,
                                                                    monkeypatch, capsys):
    """The plain-transformers lines (chat template, HF generate) print what `transfergen generate
    --source` prints for the same input and budget."""
    from transfergen.cli import main

    (index,) = [i for i, b in enumerate(BLOCKS) if "apply_chat_template" in b]
    printed = run_block(index, tiny_pretrained, tiny_finetuned, tmp_path, monkeypatch, capsys).strip()
    source = re.search(r'"content": "(.*?)"', BLOCKS[index])[1]
    budget = re.search(r"max_new_tokens=(\d+)", BLOCKS[index])[1]
    assert main(["generate", "--model", "runs/my-ft", "--source", source, "--greedy",
                 "--max-new-tokens", budget]) == 0
    ours = capsys.readouterr().out.strip()
    assert printed == ours and len(ours.split()) >= 2, (printed, ours)
