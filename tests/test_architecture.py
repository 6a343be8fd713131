"""The layering of the toolkit: imports go one way, no circles; and no function is too long.

gridgen.core <- gridgen.physics <- gridgen (the orchestration: config, sampling, runner, store,
...) <- augment <- cinn. Every module's imports are read with ``ast``, including imports inside
functions, so a lazy import cannot hide an upward dependency or a cycle. Every function,
method and nested function is measured with ``ast`` too (``end_lineno - lineno + 1``: from its
``def`` to its last line, docstring included, decorators not).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gridgen", "augment", "cinn")
#: Sub-packages of gridgen below its orchestration, lowest first.
GRIDGEN_LAYERS = ("gridgen.core", "gridgen.physics")
#: Libraries of stores and scheduling: the physics computes spectra, the orchestration keeps them.
ORCHESTRATION_LIBRARIES = ("zarr", "xarray", "dask", "distributed", "joblib", "tqdm")
#: Most lines one function may span; a longer one mixes stages that should each have a name.
MAX_FUNCTION_LINES = 80
#: Functions still allowed over the limit, by qualified name (none since the CLI rebuild).
LONG_FUNCTIONS_ALLOWED: frozenset[str] = frozenset()


def layer(module: str) -> int:
    """0 gridgen.core, 1 gridgen.physics, 2 the rest of gridgen, 3 augment, 4 cinn."""
    for depth, package in enumerate(GRIDGEN_LAYERS):
        if module == package or module.startswith(package + "."):
            return depth
    return {"gridgen": 2, "augment": 3, "cinn": 4}[module.split(".")[0]]


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
    return resolve_packages({name: imported_modules(path, name, known) for name, path in modules.items()})


def resolve_packages(raw: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph with each package's own submodules taken out of its edges and put behind it.

    A package's __init__ importing its own submodules (``gridgen.physics.engine`` re-exporting
    ``synthesize``) is the package, not a dependency of it; importing the package imports those
    submodules, so an edge into the package also leads to each of them.
    """
    face = {name: {t for t in deps if t.startswith(name + ".")} for name, deps in raw.items()}
    graph = {}
    for name, deps in raw.items():
        targets = {t for t in deps if not t.startswith(name + ".")}
        for target in list(targets):
            targets |= face.get(target, set())
        graph[name] = targets - {name}
    return graph


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """``src -> dst`` for every import from a lower layer to a higher one."""
    return sorted(f"{src} -> {dst}" for src, dsts in graph.items() for dst in dsts
                  if layer(dst) > layer(src))


def third_party_imports(path: Path) -> set[str]:
    """Top-level names of the non-relative imports in ``path``, inside functions too."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_graph_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "gridgen" / "probe.py"
    source.parent.mkdir()
    source.write_text("def f():\n    from cinn.network import CinnNetwork\n    import augment.chain\n")
    found = imported_modules(source, "gridgen.probe", {"cinn.network", "augment.chain", "augment"})
    assert found == {"cinn.network", "augment.chain"}


def test_imports_only_go_down_the_layers():
    upward = upward_imports(import_graph())
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


@pytest.mark.parametrize("graph, expected", [
    ({"gridgen.physics.nlte": {"gridgen.config"}}, ["gridgen.physics.nlte -> gridgen.config"]),
    ({"gridgen.core.seeds": {"gridgen.physics.solar"}}, ["gridgen.core.seeds -> gridgen.physics.solar"]),
    ({"gridgen.runner": {"gridgen.physics.engine", "gridgen.core.errors"}}, []),
    ({"augment.resimulate": {"gridgen.synthesis", "gridgen.physics.labels"}}, []),
])
def test_layer_check_flags_only_upward_imports(graph, expected):
    assert upward_imports(graph) == expected


def test_physics_layer_exists_and_holds_the_engine():
    modules = toolkit_modules()
    physics = {name for name in modules if layer(name) == 1}
    # The layer the checks above guard must be the one the physics lives in.
    assert {"gridgen.physics.engine.run", "gridgen.physics.atmospheres.provider",
            "gridgen.physics.priors", "gridgen.physics.labels"} <= physics
    assert not any(name.startswith("gridgen.physics") for name in modules if layer(name) != 1)


def test_physics_uses_no_store_or_scheduling_library():
    found = sorted(f"{name} imports {lib}" for name, path in toolkit_modules().items() if layer(name) == 1
                   for lib in third_party_imports(path) & set(ORCHESTRATION_LIBRARIES))
    assert not found, "the physics layer reaches for stores or schedulers:\n" + "\n".join(found)


def test_cinn_does_not_reach_into_the_physics():
    # cinn reads stores and models; how spectra are synthesised is gridgen's (line markers for
    # its plots come from gridgen.linemarkers, not from the engine and line-list modules).
    found = sorted(f"{src} -> {dst}" for src, dsts in import_graph().items() if layer(src) == 4
                   for dst in dsts if layer(dst) == 1)
    assert not found, "cinn imports gridgen's physics:\n" + "\n".join(found)


def test_third_party_imports_reads_lazy_imports(tmp_path):
    source = tmp_path / "probe.py"
    source.write_text("import numpy as np\ndef f():\n    import zarr.storage\n    from dask import delayed\n")
    assert third_party_imports(source) == {"numpy", "zarr", "dask"}


def test_importing_a_package_reaches_what_its_init_imports():
    # pkg/__init__ re-exports pkg.a; pkg.a imports other, which imports pkg: a real cycle.
    raw = {"pkg": {"pkg.a"}, "pkg.a": {"other"}, "other": {"pkg"}}
    graph = resolve_packages(raw)
    assert graph["pkg"] == set() and graph["other"] == {"pkg", "pkg.a"}
    assert _cycles(graph) == [["other", "pkg.a"]]


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


def function_lengths(path: Path, module: str) -> dict[str, int]:
    """Lines (``end_lineno - lineno + 1``) of every function in ``path``, by qualified name.

    Names are ``module.Class.method`` or ``module.outer.inner``: methods and nested functions count
    on their own, and a nested function's lines count in its outer function's too.
    """
    lengths: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}.{child.name}"
                if not isinstance(child, ast.ClassDef):
                    lengths[name] = child.end_lineno - child.lineno + 1
                visit(child, name)
            else:
                visit(child, prefix)

    visit(ast.parse(path.read_text(), filename=str(path)), module)
    return lengths


def long_functions(limit: int = MAX_FUNCTION_LINES) -> dict[str, int]:
    """Functions of the toolkit over ``limit`` lines, by qualified name."""
    return {name: n for module, path in toolkit_modules().items()
            for name, n in function_lengths(path, module).items() if n > limit}


def test_function_lengths_are_measured_from_def_to_last_line(tmp_path):
    source = tmp_path / "probe.py"
    body = "".join(f"    x{i} = {i}\n" for i in range(79))
    source.write_text(
        "@decorator\n"                                   # decorators are not the function's lines
        + 'def long():\n    """Doc."""\n' + body + "\n"   # def, docstring and 79 lines: 81
        + "class Holder:\n    def method(self):\n        if True:\n            return 1\n\n"
        + "async def outer():\n    def inner():\n        pass\n    return inner\n")
    assert function_lengths(source, "pkg.probe") == {
        "pkg.probe.long": 81, "pkg.probe.Holder.method": 3, "pkg.probe.outer": 4, "pkg.probe.outer.inner": 2}


def test_no_function_is_over_80_lines():
    over = {name: n for name, n in long_functions().items() if name not in LONG_FUNCTIONS_ALLOWED}
    assert not over, (f"functions over {MAX_FUNCTION_LINES} lines (make each a short pipeline of named stages):\n"
                      + "\n".join(f"{name}: {n} lines" for name, n in sorted(over.items())))


def test_the_allowed_long_functions_are_still_long():
    # An entry whose function was shortened or removed would let a new long one back in unseen.
    stale = sorted(LONG_FUNCTIONS_ALLOWED - set(long_functions()))
    assert not stale, "no longer over the limit; remove from LONG_FUNCTIONS_ALLOWED: " + ", ".join(stale)
