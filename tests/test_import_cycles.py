"""No import cycles between the modules of mmcache and mmfit, lazy imports inside functions included
(the same rules as shared/tools/import_cycles.py: an edge into a package's __init__ is no tie).
And mmfit's loader does not depend on the model: the trainer tells it whether to pool."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mmcache", "mmfit")

KNOWN: set[frozenset[str]] = set()  # cycles tolerated for now: none


def modules(root: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package __init__)."""
    out = {}
    for pkg in PACKAGES:
        for f in (root / pkg).rglob("*.py"):
            parts = list(f.relative_to(root).with_suffix("").parts)
            is_init = parts[-1] == "__init__"
            out[".".join(parts[:-1] if is_init else parts)] = (f, is_init)
    return out


def _targets(node: ast.AST, name: str, is_init: bool, mods: dict) -> list[str]:
    """The dotted names an import statement in module `name` refers to."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = name.split(".") if is_init else name.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    return [f"{source}.{a.name}" if f"{source}.{a.name}" in mods else source for a in node.names]


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its file (edges into __init__ left out)."""
    mods = modules(root)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, (path, is_init) in mods.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            for target in _targets(node, name, is_init, mods):
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target and target != name and not mods[target][1]:
                    graph[name].add(target)
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected groups of more than one module."""
    reach = {m: reachable(graph, m) for m in graph}
    return {frozenset({m} | {o for o in reach[m] if m in reach[o]}) for m in graph if m in reach[m]}


def test_no_new_import_cycles():
    found = cycles(import_graph())
    new = sorted(" <-> ".join(sorted(c)) for c in found - KNOWN)
    assert not new, f"import cycles: {new}"


def test_the_finder_sees_lazy_imports(tmp_path):
    pkg = tmp_path / "mmfit"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import x\n")
    (pkg / "b.py").write_text("def f():\n    from . import a\n")
    (pkg / "c.py").write_text("import mmfit.a\n")
    (tmp_path / "mmcache").mkdir()
    graph = import_graph(tmp_path)
    assert graph["mmfit.c"] == {"mmfit.a"}
    assert cycles(graph) == {frozenset({"mmfit.a", "mmfit.b"})}


def test_the_loader_does_not_depend_on_the_model():
    graph = import_graph()
    for loader in ("mmfit.data", "mmfit.stream", "mmfit.layout", "mmfit.batches"):
        assert not reachable(graph, loader) & {"mmfit.fusion", "mmfit.model", "mmfit.trainer"}, loader
