"""Wiring flows one way: neither the package's modules nor its packages import each other in a
cycle.

The module graph is built from the source, not by importing it: every ``import`` and
``from ... import`` of every module of ``pfednas`` (``src/pfednas`` and the top-level
``strategies/``, ``clients/`` and ``conf/`` installed inside it), at any level: function-level
imports and those under ``if TYPE_CHECKING:`` included (a type the checker needs is a
dependency too). ``from pkg import name`` is an edge to the submodule ``pkg.name`` where there
is one, else to ``pkg`` itself (its ``__init__``); the parent packages Python runs first are not
edges (a package's ``__init__`` may re-export its submodules, as long as none of them imports
it back).

The package graph collapses that graph, each module to its package: a subpackage of
``pfednas`` with everything under it (``pfednas.search.space`` to ``pfednas.search``,
``strategies/base.py`` to ``pfednas.strategies``); a module at the package root stands for
itself (``pfednas.train``, ``pfednas.settings``: the root's loose modules are not one package).
A package importing its own modules is no edge; two packages that reach each other are a cycle
even where no module cycle joins them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import REPO

# where each part of the package lives in the repository (pyproject's package-dir)
PACKAGE_DIRS = {"pfednas": REPO / "src" / "pfednas", "pfednas.strategies": REPO / "strategies",
                "pfednas.clients": REPO / "clients", "pfednas.conf": REPO / "conf"}
# Imports known to close a cycle, each to be removed by a move (none left):
# (importer, imported). An import listed here is left out of both graphs; one that is gone must
# leave the set (test_pending_imports_still_exist).
PENDING: set[tuple[str, str]] = set()


def module_files() -> dict[str, Path]:
    """Every module of the package: dotted name → file."""
    out: dict[str, Path] = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join((package, *parts))
            if name not in out:  # pfednas.strategies is strategies/, not src/pfednas/strategies
                out[name] = path
    return out


def imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements of ``tree`` at any depth (``if TYPE_CHECKING:`` blocks too)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that module ``name`` (at ``path``) imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in imports(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        for target in targets:
            while target and target not in known:  # `import pfednas.x.Y` names module x
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    known = set(files)
    return {name: imported_modules(name, path, known) for name, path in files.items()}


def package_of(module: str) -> str:
    """``pfednas.<first part>``: the subpackage a module is in, or a root module itself
    (``pfednas`` for the root package's ``__init__``)."""
    return ".".join(module.split(".")[:2])


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """``graph`` with each module collapsed to its package, less a package's edges to itself."""
    out: dict[str, set[str]] = {}
    for importer, imported in graph.items():
        package = package_of(importer)
        out.setdefault(package, set()).update(package_of(m) for m in imported)
        out[package].discard(package)
    return out


def graph_less_pending() -> dict[str, set[str]]:
    graph = import_graph()
    for importer, imported in PENDING:
        graph[importer].discard(imported)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected component of more than one module
    (Tarjan's algorithm), as a path ``a -> b -> ... -> a``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [cycle_in(graph, component) for component in components]


def cycle_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first)."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & component):
                if nxt == start:
                    return [*paths[node], start]
                if nxt not in paths:
                    paths[nxt] = [*paths[node], nxt]
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle in the component {sorted(component)}")


def test_graph_sees_every_kind_of_import() -> None:
    # Prepare: a known module graph, read from the repository
    graph = import_graph()

    # Assert: top-level, function-level, package-relative and TYPE_CHECKING imports are
    # edges; parts outside src/ are named inside the package
    assert "pfednas.strategies.base" in graph["pfednas.strategies.fedavg"]
    assert "pfednas.app.server_app" in graph  # src/pfednas/app/server_app.py
    assert "pfednas.clients.subnet" in graph["pfednas.clients"]  # clients/__init__.py
    assert "pfednas.strategies.robust" in graph["pfednas.strategies.gate"]
    assert "pfednas.search" in graph["pfednas.records"]  # TYPE_CHECKING


def test_function_level_relative_and_type_checking_imports_are_edges(tmp_path: Path) -> None:
    # Prepare: a module importing inside a function, relatively, and under TYPE_CHECKING
    path = tmp_path / "mod.py"
    path.write_text("from typing import TYPE_CHECKING\n"
                    "from . import sibling\n"
                    "if TYPE_CHECKING:\n    from pkg import hidden\n"
                    "def f():\n    import pkg.deep.Name\n")
    known = {"pkg", "pkg.mod", "pkg.sibling", "pkg.hidden", "pkg.deep"}

    # Execute
    found = imported_modules("pkg.mod", path, known)

    # Assert
    assert found == {"pkg.sibling", "pkg.hidden", "pkg.deep"}


def test_a_cycle_is_found_and_printed() -> None:
    # Prepare: a -> b -> c -> a, and d -> a outside the cycle
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}

    # Execute / Assert
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_modules_collapse_to_their_packages() -> None:
    # Prepare: subpackages p.a (its __init__ importing its module x) and p.c, a root module p.b
    graph = {"p.a.x": {"p.a.y", "p.b"}, "p.a.y": set(), "p.a": {"p.a.x"}, "p.b": {"p.c.z"},
             "p.c.z": {"p.a.y"}, "p": set()}

    # Execute
    packages = package_graph(graph)

    # Assert: p.a's imports of its own modules are no edge; p.a, p.b and p.c reach each other
    # although no module cycle joins them
    assert packages == {"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}, "p": set()}
    assert cycles(graph) == []
    assert cycles(packages) == [["p.a", "p.b", "p.c", "p.a"]]


def test_the_package_has_no_import_cycle() -> None:
    # Prepare: the package's graph less the pending edges
    graph = graph_less_pending()

    # Execute
    found = cycles(graph)

    # Assert
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_packages_have_no_import_cycle() -> None:
    # Prepare: the package's graph less the pending edges, collapsed to packages
    packages = package_graph(graph_less_pending())

    # Execute
    found = cycles(packages)

    # Assert
    assert not found, "package cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_pending_imports_still_exist() -> None:
    # Prepare
    graph = import_graph()

    # Assert: an import that was removed leaves PENDING, so the set names only what is left
    assert sorted(edge for edge in PENDING if edge[1] not in graph.get(edge[0], ())) == []


def test_only_flower_loads_the_server_app() -> None:
    # Prepare
    graph = import_graph()

    # Assert: nothing in the package imports the ServerApp (export, preflight and the
    # in-process runner build the strategy with pfednas.methods.build), and the ServerApp reaches
    # the strategies only through that builder (no method special-cased by its class)
    assert [name for name, imported in sorted(graph.items())
            if "pfednas.app.server_app" in imported] == []
    assert sorted(m for m in graph["pfednas.app.server_app"]
                  if m.startswith("pfednas.strategies")) == []


def test_records_results_and_checkpoints_load_without_flower_or_torch() -> None:
    # Prepare: a fresh interpreter, as `pfednas report` starts
    code = ("import sys\n"
            "import pfednas.records, pfednas.app.results, pfednas.app.checkpoint\n"
            "print(sorted(m for m in ('flwr', 'torch') if m in sys.modules))\n")

    # Execute
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO)

    # Assert
    assert out.stdout.strip() == "[]"


def test_every_package_of_the_source_is_installed() -> None:
    # pyproject lists its packages one by one: a package left out works in an editable
    # install and is missing from the wheel (the container image, a FAB's install)
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"])
    packages = {name for name, path in module_files().items() if path.name == "__init__.py"}

    assert packages <= listed, sorted(packages - listed)
