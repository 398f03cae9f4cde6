"""The module layering the design asks for (shared/design/layers.md), checked on the source:
no module imports another's private name, imports form no cycle (lazy imports included),
and the report imports no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "transfergen"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        parts = path.relative_to(PKG.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(mods: dict[str, Path]) -> list[tuple[str, str, str]]:
    """(importer, imported module, name) for every `from transfergen... import name`, lazy ones too."""
    found = []
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module
                if target and target.split(".")[0] == "transfergen":
                    found += [(mod, target, a.name) for a in node.names]
            elif isinstance(node, ast.Import):
                found += [(mod, a.name, "") for a in node.names if a.name.split(".")[0] == "transfergen"]
    return found


def test_no_module_imports_a_private_name_of_another():
    private = [(m, t, n) for m, t, n in _imports(_modules())
               if n.startswith("_") and not n.startswith("__") and t != m]
    assert not private, private


def test_imports_form_no_cycle():
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, target, name in _imports(mods):
        dep = f"{target}.{name}" if f"{target}.{name}" in mods else target
        if dep in mods and dep != mod and not dep.startswith(mod + "."):  # a package loading its own parts
            graph[mod].add(dep)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph[start] - seen:
            seen.add(nxt)
            if nxt == goal or reaches(nxt, goal, seen):
                return True
        return False

    cycles = sorted(m for m in graph if reaches(m, m, set()))
    assert not cycles, f"modules on an import cycle: {cycles}"


def test_report_imports_no_torch():
    code = ("import sys, transfergen.report, transfergen.results, transfergen.study; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "[]"
