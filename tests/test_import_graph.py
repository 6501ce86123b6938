"""The package's imports run one way: no module imports, however indirectly, a module that imports it.

Every import statement counts, wherever it stands (inside a function too: deferring an import hides
a cycle, it does not remove it), relative ones resolved; only those under ``if TYPE_CHECKING:`` do
not (they never run). Importing ``a.b.c`` from outside package ``a.b`` runs ``a/b/__init__.py``
first, so that is an arrow too: a package's face must not lead back to who imports its modules.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]

def modules(package: Path) -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is a package's __init__) for every .py file under ``package``."""
    out = {}
    for f in sorted(package.rglob("*.py")):
        parts = list(f.relative_to(package.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    return out


def _type_checking(test: ast.expr) -> bool:
    return isinstance(test, ast.Name) and test.id == "TYPE_CHECKING" or \
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _statements(tree: ast.AST):
    """Every import statement, skipping the bodies of ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _type_checking(node.test):
            for child in node.orelse:
                yield from _statements(ast.Module(body=[child], type_ignores=[]))
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        yield from _statements(node)


def _targets(node, name: str, is_pkg: bool, mods: dict) -> set[str]:
    """The package's modules one import statement of module ``name`` loads by name."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in mods}
    if node.level:
        here = name.split(".") if is_pkg else name.split(".")[:-1]
        base = ".".join(here[:len(here) - node.level + 1] + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    if base not in mods:
        return set()
    return {f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names}


def import_graph(package: Path) -> dict[str, dict[str, int]]:
    """Module -> {module it imports: the line of the first statement that does}, package faces included."""
    mods = modules(package)
    graph = {}
    for name, (f, is_pkg) in mods.items():
        arrows: dict[str, int] = {}
        for node in _statements(ast.parse(f.read_text(encoding="utf-8"), str(f))):
            for target in _targets(node, name, is_pkg, mods):
                parts = target.split(".")
                faces = [".".join(parts[:i]) for i in range(1, len(parts))]
                for t in [target, *(p for p in faces if p in mods and not (name + ".").startswith(p + "."))]:
                    if t != name:
                        arrows.setdefault(t, node.lineno)
        graph[name] = arrows
    return graph


def find_cycle(graph: dict[str, dict[str, int]], skip=frozenset()) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None; arrows in ``skip`` are left out."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for t in sorted(graph.get(m, {})):
            if (m, t) in skip:
                continue
            if state.get(t) == 1:
                return path[path.index(t):] + [t]
            if t not in state and (found := visit(t)):
                return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def describe(cycle: list[str], graph: dict, mods: dict) -> str:
    return "\n".join(f"  {mods[a][0].relative_to(ROOT)}:{graph[a][b]} imports {b}" for a, b in zip(cycle, cycle[1:]))


def test_no_import_cycle():
    graph, mods = import_graph(ROOT / "radis_mlx"), modules(ROOT / "radis_mlx")
    cycle = find_cycle(graph)
    assert cycle is None, "an import cycle (every arrow of it below; a deferred import counts):\n" + \
        describe(cycle, graph, mods)


def _package(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        f = root / "pkg" / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    return root / "pkg"


def test_the_walk_sees_deferred_relative_and_face_imports_and_skips_type_checking(tmp_path):
    base = {"__init__.py": "", "low.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from .high import H\nelse:\n    import json\n",
            "high.py": "from . import low\n", "sub/__init__.py": "from .leaf import x\n",
            "sub/leaf.py": "from ..low import y\n"}
    pkg = _package(tmp_path / "a", base)
    assert find_cycle(import_graph(pkg)) is None  # TYPE_CHECKING: no arrow
    assert import_graph(pkg)["pkg.sub.leaf"] == {"pkg.low": 1}  # its own package's face: no arrow

    deferred = _package(tmp_path / "b", {**base, "low.py": "def f():\n    from .high import H\n"})
    assert find_cycle(import_graph(deferred)) == ["pkg.high", "pkg.low", "pkg.high"]

    face = _package(tmp_path / "c", {**base, "low.py": "def f():\n    from pkg.sub.leaf import x\n"})
    # low -> sub/__init__ (run first) -> leaf -> low
    assert find_cycle(import_graph(face)) == ["pkg.low", "pkg.sub", "pkg.sub.leaf", "pkg.low"]


def test_the_cli_starts_without_mlx():
    """What stays deferred is deferred for this: `radis-mlx --help` loads neither MLX nor mlx-lm."""
    code = "import sys, radis_mlx.cli; print(sorted(m for m in ('mlx', 'mlx_lm', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"

