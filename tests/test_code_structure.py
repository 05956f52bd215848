"""The shape of the code base, checked as a test: no import cycles between alia_train's
modules (counting imports inside functions too: a lazy import still makes a dependency), each
part importing only lower layers, no module in src/ longer than MAX_MODULE_LINES and no
function longer than MAX_FUNCTION_LINES, and one start-up: no test or benchmark assembles a
run (process groups, megatron's import, the trainer) itself."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "alia_train"
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 400
REPO = SRC.parent


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
    "training": 3, "convert": 3, "eval": 3,
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


def test_no_module_longer_than_the_limit():
    long = [f"{module}: {n} lines" for module, path in _modules().items()
            if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES]
    assert long == []


# Steps of the start-up (training/startup.py, training/run.py, parallel/runtime.py). Outside
# src/ they are taken only through open_run / train / process_groups, or the CLI.
START_UP_STEPS = re.compile(
    r"\b(init_process_group|initialize_model_parallel|import_megatron|cpu_compat\.install|start_process_groups"
    r"|resolve_runtime|start_runtime|install_stop_handler|quiet_libraries|prepare_process"
    r"|Trainer|CheckpointWriter|TrainingState)\("
)
# Tests of one start-up step itself, which must call it.
TESTS_OF_A_STEP = {
    "tests/training/test_signals.py": "the stop handler's own test",
    "tests/parallel/test_cpu_compat.py": "the test of how the start-up imports megatron-core on CPU",
}


def _start_up_steps_outside(roots: list[Path]) -> list[str]:
    found = []
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if rel in TESTS_OF_A_STEP or path.resolve() == Path(__file__).resolve():
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if START_UP_STEPS.search(line):
                    found.append(f"{rel}:{number}: {line.strip()}")
    return found


def test_no_test_or_benchmark_assembles_a_run_itself():
    assert _start_up_steps_outside([REPO / "tests", REPO / "benchmarks", REPO / "scripts"]) == []


def test_the_start_up_check_finds_a_copied_step(tmp_path):
    (tmp_path / "worker.py").write_text("import torch.distributed as dist\ndist.init_process_group('gloo')\n")
    global REPO
    saved, REPO = REPO, tmp_path
    try:
        assert _start_up_steps_outside([tmp_path]) == ["worker.py:2: dist.init_process_group('gloo')"]
    finally:
        REPO = saved


def test_only_the_runtime_asks_torch_for_a_gpu():
    """train.device is resolved once (parallel/runtime.py); the rest reads the Runtime."""
    asking = [f"{m}" for m, path in _modules().items()
              if "cuda.is_available(" in path.read_text() and m not in ASKS_FOR_A_GPU]
    assert asking == []


# Modules that ask torch for a GPU: the runtime for training; tools that are not a training run.
ASKS_FOR_A_GPU = {"alia_train.parallel.runtime", "alia_train.eval.hf_model"}  # alia-eval: --device auto
