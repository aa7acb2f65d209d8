"""The package's shape: no import cycles inside `mft`, between modules or between its packages, so every
import arrow points one way."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, package: str) -> list[tuple[str, list[str]]]:
    """(module, names) of every import, at module level or inside functions, but not under TYPE_CHECKING
    (those are for the type checker only and never run)."""
    out: list[tuple[str, list[str]]] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                todo.extend(child.orelse)  # type: ignore[arg-type]
                continue
            if isinstance(child, ast.Import):
                out += [(alias.name, []) for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative import
                    base = ".".join(package.split(".")[: len(package.split(".")) - child.level + 1] + [base])
                out.append((base.strip("."), [alias.name for alias in child.names]))
            todo.append(child)
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
