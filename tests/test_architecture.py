"""The layering of the toolkit: imports go one way (core <- gridgen <- augment <- cinn), no circles.

Every module's imports are read with ``ast``, including imports inside functions, so a lazy
import cannot hide an upward dependency or a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gridgen", "augment", "cinn")


def layer(module: str) -> int:
    """0 for gridgen.core, 1 for the rest of gridgen, 2 for augment, 3 for cinn."""
    if module == "gridgen.core" or module.startswith("gridgen.core."):
        return 0
    return {"gridgen": 1, "augment": 2, "cinn": 3}[module.split(".")[0]]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def toolkit_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def imported_modules(path: Path, name: str, known: set[str]) -> set[str]:
    """Toolkit modules that ``path`` imports, resolved to the most specific known module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            candidates = [f"{source}.{alias.name}" for alias in node.names] + [source]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in known:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                targets.add(candidate)
                break
    return targets


def import_graph() -> dict[str, set[str]]:
    modules = toolkit_modules()
    known = set(modules)
    graph = {}
    for name, path in modules.items():
        # A package's __init__ importing its own submodules is the package, not a dependency.
        graph[name] = {t for t in imported_modules(path, name, known) if not t.startswith(name + ".")}
    return graph


def test_the_graph_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "gridgen" / "probe.py"
    source.parent.mkdir()
    source.write_text("def f():\n    from cinn.network import CinnNetwork\n    import augment.chain\n")
    found = imported_modules(source, "gridgen.probe", {"cinn.network", "augment.chain", "augment"})
    assert found == {"cinn.network", "augment.chain"}


def test_imports_only_go_down_the_layers():
    upward = sorted(f"{src} -> {dst}" for src, dsts in import_graph().items() for dst in dsts
                    if layer(dst) > layer(src))
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def test_no_import_cycles():
    graph = import_graph()
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"a"}, "c": set()}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
])
def test_cycle_finder(graph, expected):
    assert _cycles(graph) == expected
