"""Every module of ``edge`` and ``trainer`` imports in a fresh interpreter, and the import
graph between them has no cycle.

The graph is read with :mod:`ast`: an edge ``a -> b`` for every ``import`` of an
``edge.*``/``trainer.*`` module ``b`` in ``a`` (``from p import x`` counts as ``p.x`` when
that is a module, else ``p``; ``if TYPE_CHECKING:`` blocks do not count). Two graphs:

* top level (what runs when ``a`` is imported): must be a DAG, no exception;
* top level plus imports inside functions: a cycle there is a dependency knot that a
  deferred import only hides, so it must be a DAG too, but for :data:`ALLOWED_CYCLES`.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("edge", "trainer")

#: Cycles (through imports inside functions) tolerated, each as the set of its modules:
#: none.
ALLOWED_CYCLES: set[frozenset[str]] = set()


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__main__":
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _is_type_checking(node: ast.AST) -> bool:
    t = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING")
        or (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"))


def _targets(node: ast.AST, module: str, is_pkg: bool, modules: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            parts = module.split(".")[: None if is_pkg else -1]
            parts = parts[: len(parts) - node.level + 1]
            base = ".".join(parts + ([node.module] if node.module else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                 for a in node.names]
    else:
        return []
    found = (_resolve(n, modules) for n in names)
    return [t for t in found if t is not None and t != module]


def imports(module: str, path: Path, modules: dict[str, Path]) -> tuple[set[str], set[str]]:
    """(top-level, inside-function) imports of ``edge``/``trainer`` modules by ``module``."""
    top: set[str] = set()
    deferred: set[str] = set()
    is_pkg = path.name == "__init__.py"

    def walk(node: ast.AST, in_func: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if _is_type_checking(child):
                for sub in child.orelse:  # type: ignore[attr-defined]
                    walk(ast.Module(body=[sub], type_ignores=[]), in_func)
                continue
            (deferred if in_func else top).update(_targets(child, module, is_pkg, modules))
            walk(child, in_func or isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    walk(ast.parse(path.read_text(), filename=str(path)), False)
    return top, deferred


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[frozenset[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = set()
                while True:
                    x = stack.pop()
                    on_stack.discard(x)
                    comp.add(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    out.append(frozenset(comp))
    return out


def _graphs() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    modules = _modules()
    top: dict[str, set[str]] = {}
    full: dict[str, set[str]] = {}
    for name, path in modules.items():
        t, d = imports(name, path, modules)
        top[name] = t
        full[name] = t | d
    return top, full


def test_every_module_imports_in_a_fresh_interpreter():
    names = sorted(_modules())
    code = ("import importlib, sys\nbad = []\nfor m in sys.argv[1:]:\n"
            "    try:\n        importlib.import_module(m)\n"
            "    except Exception as exc:\n        bad.append(f'{m}: {exc!r}')\n"
            "print('\\n'.join(bad))\nsys.exit(1 if bad else 0)\n")
    res = subprocess.run([sys.executable, "-c", code, *names], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=False)
    assert res.returncode == 0, f"modules that do not import:\n{res.stdout}{res.stderr[-2000:]}"


def test_top_level_import_graph_is_a_dag():
    top, _ = _graphs()
    assert len(top) > 50
    assert cycles(top) == []


def test_import_graph_with_deferred_imports_is_a_dag_but_for_the_allowed_cycles():
    _, full = _graphs()
    found = set(cycles(full))
    new = sorted(sorted(c) for c in found - ALLOWED_CYCLES)
    gone = sorted(sorted(c) for c in ALLOWED_CYCLES - found)
    assert not new, f"new import cycles: {new}"
    assert not gone, f"no longer cycles, remove them from ALLOWED_CYCLES: {gone}"


def test_cycle_finder_sees_cycles():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(g) == [frozenset({"a", "b", "c"})]
    assert cycles({"a": {"b"}, "b": set()}) == []
