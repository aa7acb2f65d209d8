"""The package's shape: no import cycles inside `mft`, between modules or between its packages (imports for
the type checker included), so every import arrow points one way; no module over MAX_LINES lines; the config
a leaf."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
# A module that grows past this mixes concerns: split it by concern, not by size.
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.AST, package: str) -> list[tuple[str, list[str]]]:
    """(module, names) of every import: at module level, inside functions and under `if TYPE_CHECKING:`
    alike (an import for the type checker only still ties the two modules together)."""
    out: list[tuple[str, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base])
            out.append((base.strip("."), [alias.name for alias in node.names]))
    return out


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in (SRC / "mft").rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for module, names in _imports(ast.parse(path.read_text(encoding="utf-8")), package):
            if not module.startswith("mft"):
                continue
            for target in [f"{module}.{n}" if f"{module}.{n}" in files else module for n in names or [""]]:
                if target in files and target != name:
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a path that returns to its start), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_import_cycle_inside_mft() -> None:
    graph = import_graph()
    assert "mft.pipeline.run" in graph and graph["mft.pipeline.run"]  # the walk sees the package
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_import_cycle_between_packages() -> None:
    """`mft.tasks`, `mft.backends`, `mft.pipeline`, `mft.report`, ... and the top-level modules as layers:
    a module of one never imports (even inside a function) a module of another that imports it back."""

    def unit(module: str) -> str:
        return ".".join(module.split(".")[:2])

    packages: dict[str, set[str]] = {}
    for module, targets in import_graph().items():
        packages.setdefault(unit(module), set())
        for target in targets:
            if unit(target) != unit(module):
                packages[unit(module)].add(unit(target))
                packages.setdefault(unit(target), set())
    cycle = find_cycle(packages)
    assert cycle is None, "import cycle between packages: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_methods_table_is_the_only_place_that_names_the_compared_methods() -> None:
    """Adding a method to the comparison touches `methods.py` (plus its data builder) only: no other module
    spells a method's key ('ours', the default, excepted), so no list of methods can grow up elsewhere."""
    from mft.methods import METHODS

    keys = {m.key for m in METHODS} | {m.run_as for m in METHODS}
    keys.discard("ours")
    found = []
    for path in (SRC / "mft").rglob("*.py"):
        if path.name == "methods.py" and path.parent.name == "mft":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in keys:
                found.append(f"{path.relative_to(SRC)}:{node.lineno} {node.value!r}")
    assert len(keys) >= 4 and not found, found


def _modules_importing(path: Path) -> set[str]:
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    return {module for module, _ in _imports(ast.parse(path.read_text(encoding="utf-8")), package)}


def test_imports_for_the_type_checker_count() -> None:
    tree = ast.parse(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from mft.backends.base import X\n"
    )
    assert ("mft.backends.base", ["X"]) in _imports(tree, "mft")


def test_no_module_over_the_line_limit() -> None:
    long = {
        str(p.relative_to(SRC)): n
        for p in (SRC / "mft").rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines (split them by concern): {long}"


def test_the_config_is_a_leaf() -> None:
    """config.py holds the config classes, their loading and validation: it builds no task, backend or
    society, so it imports nothing from the packages that do (not even inside a function)."""
    imported = _modules_importing(SRC / "mft" / "config.py")
    assert "pydantic" in imported  # the walk sees its imports
    bad = sorted(
        m for m in imported if m.split(".")[:2] in (["mft", "backends"], ["mft", "tasks"], ["mft", "debate"])
    )
    assert not bad, bad
