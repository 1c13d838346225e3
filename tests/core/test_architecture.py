"""The package's shape: no import circles, a short top level, no private names across modules.

The import graph is read with `ast` from every module under `explorer/`, counting imports at
module level and inside functions alike (a function-level import that closes a circle is still a
circle); only `if TYPE_CHECKING:` blocks are left out, as they never run. Run it alone with
`python -m pytest tests/core/test_architecture.py -q`.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "explorer"
MAX_TOP_LEVEL = 20


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        if "_bundle" in p.parts:
            continue
        parts = p.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def _runtime_nodes(tree: ast.AST):
    """Every node except those under `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[tuple[str, str]]:
    """(imported module, name imported from it or "") for every runtime import in `path`."""
    is_pkg = path.name == "__init__.py"
    out = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {(a.name, "") for a in node.names if a.name.startswith("explorer")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("explorer"):
                continue
            for a in node.names:
                sub = f"{mod}.{a.name}"
                out.add((sub, "") if sub in mods else (mod, a.name))
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        edges = set()
        for mod, _ in _imports(name, path, mods):
            while mod and mod not in mods:
                mod = mod.rpartition(".")[0]
            # a package's __init__ always runs before its submodules: naming an ancestor is no edge
            if mod and mod != name and not name.startswith(mod + "."):
                edges.add(mod)
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    cycles = _cycles(_graph())
    assert not cycles, f"import circles (function-level imports count): {cycles}"


def test_the_cycle_finder_finds_a_planted_circle():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(g) == [["a", "b", "c"]], "a 3-module circle must be reported, d is outside it"


def test_top_level_is_short():
    top = sorted(p.stem for p in PKG.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL, (
        f"{len(top)} top-level modules (at most {MAX_TOP_LEVEL}): {top}"
    )


def test_no_private_name_crosses_a_module():
    """`from explorer.x import _name` and `module._name` on an imported explorer module."""
    mods = _modules()
    found = []
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("explorer"):
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    if sub in mods:
                        aliases[a.asname or a.name] = sub
                    elif a.name.startswith("_") and not a.name.startswith("__"):
                        found.append(f"{name}: from {node.module} import {a.name}")
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("explorer") and a.asname:
                        aliases[a.asname] = a.name
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                found.append(f"{name}: {node.value.id}.{node.attr}")
    assert not found, f"private names used outside their module: {sorted(set(found))}"
