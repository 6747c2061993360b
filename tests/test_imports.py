"""The framework's import structure: every module imports on its own, no two modules import each other (even
through a function-level import), and no module outside the evaluation hides an import in a function."""
from __future__ import annotations

import ast
import importlib
import os
import sys
import traceback
from pathlib import Path

import patchworld

ROOT = Path(patchworld.__file__).resolve().parent
#: the evaluation engines, reports and commands still import each other; they are split apart separately
PENDING = "patchworld.evaluation"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(["patchworld", *(parts[:-1] if parts[-1] == "__init__" else parts)])


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py")) if "templates" not in p.parts}


def runtime_imports(path: Path) -> list[tuple[ast.ImportFrom | ast.Import, bool]]:
    """Each import statement that runs (not under ``if TYPE_CHECKING``), and whether it is inside a function."""
    tree = ast.parse(path.read_text())
    typing_only = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and getattr(block.test, "id", "") == "TYPE_CHECKING" for node in ast.walk(block)}
    in_function = {id(node) for function in ast.walk(tree)
                   if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)) for node in ast.walk(function)}
    return [(node, id(node) in in_function) for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in typing_only]


def imported_modules(name: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The patchworld modules an import statement of module `name` loads."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in MODULES}
    if node.level:
        package = name.split(".") if MODULES[name].name == "__init__.py" else name.split(".")[:-1]
        base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    submodules = {f"{base}.{alias.name}" for alias in node.names} & set(MODULES)
    names = len(node.names) > len(submodules)  # names defined by `base` itself, not its submodules
    return submodules | ({base} if names and base in MODULES else set())


def import_graph() -> dict[str, set[str]]:
    return {name: set().union(*(imported_modules(name, node) for node, _ in runtime_imports(path))) - {name}
            for name, path in MODULES.items()}


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, found = {}, {}, [], []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for child in graph[node]:
            if child not in index:
                visit(child)
                low[node] = min(low[node], low[child])
            elif child in stack:
                low[node] = min(low[node], index[child])
        if low[node] == index[node]:
            component = set()
            while not component or node not in component:
                component.add(stack.pop())
            if len(component) > 1:
                found.append(component)

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_framework_module_imports_one_that_imports_it_back():
    outside = [sorted(c) for c in cycles(import_graph()) if not all(m.startswith(PENDING) for m in c)]
    assert outside == [], f"import cycles: {outside}"


def test_no_import_hides_in_a_function_outside_the_evaluation():
    hidden = [f"{name}:{node.lineno}" for name, path in MODULES.items() if not name.startswith(PENDING)
              for node, in_function in runtime_imports(path) if in_function and imported_modules(name, node)]
    assert hidden == []


def imports_alone(name: str) -> bool:
    """Whether module `name` imports in a forked copy of this process from which every patchworld module was
    dropped: the third-party libraries stay loaded (fast), patchworld's own modules load afresh in the order
    this one module asks for them."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        for loaded in [m for m in sys.modules if m.split(".")[0] in ("patchworld", "patchworld_plugins")]:
            del sys.modules[loaded]
        try:
            importlib.import_module(name)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def test_every_module_imports_alone(capfd):
    failed = [name for name in MODULES if not imports_alone(name)]
    assert failed == [], capfd.readouterr().err[-3000:]


def test_a_module_that_fails_to_import_is_found(tmp_path, monkeypatch):
    (tmp_path / "broken_module_for_the_test.py").write_text("import patchworld\nraise ImportError('cycle')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert imports_alone("patchworld.recipes") and not imports_alone("broken_module_for_the_test")
