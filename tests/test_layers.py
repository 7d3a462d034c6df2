"""The import graph of the project's packages runs one way and has no cycles.

Layers, lowest first: ``graphs`` (architecture -> graph), the ``hyperinit`` core
(generators, prediction, files, Hub), ``training`` and ``serve`` (which use the core and not
each other), and the command line (``hyperinit.cli``, ``hyperinit.commands``,
``hyperinit.__main__``), which may use everything. A module imports only from its own layer
or lower ones, no two modules import each other through any chain, and no module imports
another module's private (``_underscore``) names. Every ``import`` statement counts, those
inside functions too: a lazy import is still a dependency, only a later one.

The graph is read from the source with :mod:`ast`, so nothing is imported to check it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("graphs", "hyperinit", "training", "serve")
CLI = ("hyperinit.cli", "hyperinit.commands", "hyperinit.__main__")


def layer(module: str) -> tuple[int, str]:
    """``(rank, group)``: a module may import from lower ranks and from its own group."""
    if any(module == top or module.startswith(f"{top}.") for top in CLI):
        return 3, "cli"
    top = module.partition(".")[0]
    return {"graphs": (0, "graphs"), "hyperinit": (1, "hyperinit"), "training": (2, "training"),
            "serve": (2, "serve")}[top]


@dataclass(frozen=True)
class Import:
    """One imported module, and the names taken from it (empty for ``import x``)."""

    source: str
    target: str
    names: tuple[str, ...]
    line: int

    def __str__(self) -> str:
        names = f" ({', '.join(self.names)})" if self.names else ""
        return f"{self.source}:{self.line} imports {self.target}{names}"


def module_files() -> dict[str, Path]:
    """Dotted module name -> source file, for every module of PACKAGES."""
    files = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def imports(module: str, path: Path, known: set[str]) -> list[Import]:
    """The imports of ``module`` that reach a module of PACKAGES, wherever they stand."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, (), node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            plain = []
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                if f"{base}.{alias.name}" in known:
                    found.append(Import(module, f"{base}.{alias.name}", (), node.lineno))
                else:
                    plain.append(alias.name)
            if plain:
                found.append(Import(module, base, tuple(plain), node.lineno))
    return [imp for imp in found if imp.target in known]


@pytest.fixture(scope="module")
def graph() -> list[Import]:
    files = module_files()
    return [imp for module, path in files.items() for imp in imports(module, path, set(files))]


def private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_the_walk_sees_the_packages(graph):
    """A guard for the checks below: the walk finds modules and their imports."""
    sources = {imp.source for imp in graph}
    assert {"hyperinit.predict", "serve.service", "training.trainer"} <= sources
    assert any(imp.target == "graphs" for imp in graph)


def test_imports_follow_the_layers(graph):
    wrong = []
    for imp in graph:
        (rank, group), (to_rank, to_group) = layer(imp.source), layer(imp.target)
        if to_rank > rank or (to_rank == rank and to_group != group):
            wrong.append(str(imp))
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def test_no_private_names_cross_modules(graph):
    wrong = [str(imp) for imp in graph
             if any(private(name) for name in imp.names)
             or (private(imp.target.rpartition(".")[2])
                 and imp.target.rpartition(".")[0] != imp.source.rpartition(".")[0])]
    assert not wrong, "private names imported from other modules:\n" + "\n".join(wrong)


def test_no_import_cycles(graph):
    edges: dict[str, set[str]] = {}
    for imp in graph:
        if imp.target != imp.source:
            edges.setdefault(imp.source, set()).add(imp.target)
    cycles = [sorted(c) for c in strongly_connected(edges) if len(c) > 1]
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def strongly_connected(edges: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components of a directed graph (iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    components.append(component)
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(edges.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return components


def test_the_checks_catch_what_they_look_for():
    """The rules themselves, on made-up edges."""
    assert [sorted(c) for c in strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}})
            if len(c) > 1] == [["a", "b", "c"]]
    assert all(len(c) == 1 for c in strongly_connected({"a": {"b"}, "b": {"c"}}))
    assert layer("hyperinit.commands.train") > layer("training.trainer") > layer("hyperinit.ghn")
    assert layer("serve.app")[0] == layer("training.zoo")[0]
    assert private("_buffers") and not private("__version__") and not private("predict")
