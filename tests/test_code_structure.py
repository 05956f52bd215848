"""The shape of the code base, checked as a test: no import cycles between alia_train's
modules (counting imports inside functions too: a lazy import still makes a dependency), and
no function in src/ longer than MAX_FUNCTION_LINES."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "alia_train"
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imported(module: str, path: Path, known: set[str]) -> set[str]:
    """alia_train modules that `module` imports anywhere in its file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                out.add(name)
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _package_edges(module: str, imported: set[str]) -> set[str]:
    # A package's __init__ importing its own submodules is how packages work, not a cycle.
    return {m for m in imported if not m.startswith(module + ".")}


def test_no_import_cycles():
    modules = _modules()
    known = set(modules)
    graph = {m: _package_edges(m, _imported(m, p, known)) for m, p in modules.items()}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_function_longer_than_the_limit():
    long = []
    for module, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                lines = node.end_lineno - start + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{module}.{node.name}: {lines} lines")
    assert long == []


# Each top-level part of the package and its layer: a part may import only parts of a lower
# layer (or its own). docs/architecture.md draws the same picture.
LAYERS = {
    "fs": 0, "exit_codes": 0, "progress": 0, "metrics_file": 0, "config": 0,
    "model": 1, "data": 1, "parallel": 1,
    "plan": 2, "checkpoint": 2, "report": 2,
    "training": 3, "convert": 3,
    "cli": 4,
}


def _part(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def test_parts_import_only_lower_layers():
    modules = _modules()
    known = set(modules)
    upward = []
    for module, path in modules.items():
        part = _part(module)
        if not part:
            continue
        assert part in LAYERS, f"{part}: new top-level part of alia_train; give it a layer in LAYERS"
        for target in _imported(module, path, known):
            other = _part(target)
            if other and other != part and LAYERS[other] >= LAYERS[part]:
                upward.append(f"{module} -> {target}")
    assert upward == []
