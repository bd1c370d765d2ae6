"""The package's shape: no import cycles (imports inside functions included), small functions, few parameters.

An import inside a function that closes a cycle still is a cycle: it only moves the failure from import time to
the first call. So the graph below counts every import statement of a module, wherever it is, except those under
``if TYPE_CHECKING:`` (never executed).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lwta_plugin"
ROOT_NAME = "lwta_plugin"
MAX_FUNCTION_LINES = 80
MAX_PARAMETERS = 10


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _targets(module: str, is_package: bool, node: ast.Import | ast.ImportFrom, known: set[str]) -> set[str]:
    """The package modules an import statement executes (the module itself, or the submodules it names)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[:len(base) - (node.level - 1)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        names = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in known else prefix for a in node.names]
    out = set()
    for name in names:
        if not (name == ROOT_NAME or name.startswith(ROOT_NAME + ".")):
            continue
        while name not in known and "." in name:  # `import lwta_plugin.x.attr` style: the longest module prefix
            name = name.rsplit(".", 1)[0]
        parts = name.split(".")
        # importing a.b.c also executes the package a.b, unless the importer lives in a.b (then a.b is already
        # initialised or being initialised); every module implicitly runs the root package: not an edge
        own = {".".join(module.split(".")[:i]) for i in range(1, len(module.split(".")) + 1)}
        out |= {".".join(parts[:i]) for i in range(2, len(parts))} - own
        out.add(name)
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> package modules it imports (anywhere in its code)."""
    modules = _modules()
    known = set(modules)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        is_package = path.name == "__init__.py"
        edges = set()
        for node in _import_nodes(tree):
            edges |= _targets(name, is_package, node, known)
        graph[name] = edges - {name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return cycles


def test_the_graph_sees_imports_inside_functions():
    """The checker itself: a relative import inside a function is an edge, a TYPE_CHECKING one is not."""
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .models import LWTANet\n"
                     "def f():\n    from .zoo import load_model\n    from . import statistics\n")
    known = {"lwta_plugin", "lwta_plugin.zoo", "lwta_plugin.models", "lwta_plugin.statistics"}
    edges = set()
    for node in _import_nodes(tree):
        edges |= _targets("lwta_plugin.cards", False, node, known)
    assert edges == {"lwta_plugin.zoo", "lwta_plugin.statistics"}
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 20, "the package was not found"
    cycles = find_cycles(graph)
    detail = "; ".join(" <-> ".join(c) for c in cycles)
    assert not cycles, f"import cycles in lwta_plugin: {detail}"


def _functions() -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    out = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((f"{name}:{node.lineno} {node.name}", node))
    return out


@pytest.mark.parametrize("limit", [MAX_FUNCTION_LINES])
def test_functions_are_short(limit):
    long = [f"{where} ({node.end_lineno - node.lineno + 1} lines)" for where, node in _functions()
            if node.end_lineno - node.lineno + 1 > limit]
    assert not long, f"functions longer than {limit} lines: {', '.join(long)}"


def test_functions_take_few_parameters():
    many = []
    for where, node in _functions():
        a = node.args
        params = [p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs) if p.arg not in ("self", "cls")]
        if len(params) > MAX_PARAMETERS:
            many.append(f"{where} ({len(params)})")
    assert not many, f"functions with more than {MAX_PARAMETERS} parameters: {', '.join(many)}"
