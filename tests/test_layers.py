"""The import graph keeps the architecture's layers (docs/ARCHITECTURE.md, "Layers").

It reads every module of the product with `ast` (module-level and function-level imports
alike: a lazy import is still a dependency) and fails on

- an import that goes up a layer: the library (quorumdb/) imports no node role and no tool; a
  node role imports no tool; inside the compute node the cluster client imports nothing of the
  SQL engine, the engine nothing of sessions, sessions nothing of the protocols on top;
- an import between two node roles, except the journal's client modules (below);
- a cycle between modules;
- a package `__init__.py` that imports anything at import time (importing any module runs its
  packages' `__init__` first, so an import there drags in, and can cycle through, the rest).
"""
from __future__ import annotations

import ast
import pathlib

import pytest

from quorumdb import graphs

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("quorumdb", "journal", "adjudicator", "storage_node", "compute_node", "tools")

# (module prefix, layer): a module belongs to the longest prefix that matches; an import may go
# to the same or a lower layer only.
LAYERS = (
    ("quorumdb", 0),                 # the shared library, with the generated protobuf code
    ("journal", 1),                  # the node roles ...
    ("adjudicator", 1),
    ("storage_node", 1),
    ("compute_node.cluster", 1),     # ... and the compute node's cluster client: reads, commits
    ("compute_node.sql", 2),         # the SQL engine, over a transaction of the cluster client
    ("compute_node.sessions", 3),    # sessions (and COPY), which drive the engine
    ("compute_node.pgwire", 4),      # the PostgreSQL protocol on top of sessions
    ("compute_node.service", 4),     # the gRPC client API on top of sessions
    ("compute_node.metrics", 4),
    ("compute_node.main", 5),        # wires one compute node together
    ("tools", 9),                    # command-line tools: may use anything
)
ROLES = ("journal", "adjudicator", "storage_node", "compute_node")
# The journal's client side, which the roles that talk to the journal use: the adjudicator
# leader's writer (replicated appends, fencing) and the follower that reads committed entries
# (adjudicator standbys, secondary regions, storage nodes). They live in journal/ so that the
# journal's whole protocol is in one folder.
JOURNAL_CLIENT = ("journal.writer", "journal.writer_core", "journal.follower")


def _modules() -> dict[str, pathlib.Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).with_suffix("")
            parts = list(relative.parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The product module an imported dotted name lands in (None: outside the product)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: pathlib.Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, at import time?) for every import statement of a module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, top_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = top_level and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    target = _resolve(alias.name)
                    if target:
                        found.append((target, child.lineno, top_level))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = module.split(".")
                    base = base if is_package else base[:-1]
                    base = base[: len(base) - (child.level - 1)]
                    source = ".".join(base + ([child.module] if child.module else []))
                else:
                    source = child.module or ""
                for alias in child.names:
                    # `from a import b` imports the module a.b when there is one, else a name of a.
                    target = _resolve(f"{source}.{alias.name}") if f"{source}.{alias.name}" in MODULES \
                        else _resolve(source)
                    if target:
                        found.append((target, child.lineno, top_level))
            visit(child, nested)

    visit(tree, True)
    return found


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def _layer(module: str) -> int:
    best = max((prefix for prefix, _ in LAYERS if module == prefix or module.startswith(prefix + ".")), key=len)
    return dict(LAYERS)[best]


def _role(module: str) -> str | None:
    top = module.split(".")[0]
    return top if top in ROLES else None


def _where(module: str, line: int) -> str:
    return f"{MODULES[module].relative_to(ROOT)}:{line}"


def test_the_graph_is_read():
    # The test would pass vacuously if it found no modules or no imports.
    assert len(MODULES) > 150
    assert sum(len(edges) for edges in GRAPH.values()) > 800
    assert ("quorumdb.rpc", ) and any(target == "quorumdb.rpc" for target, _, _ in GRAPH["journal.main"])


def test_no_import_goes_up_a_layer():
    wrong = []
    for module, edges in GRAPH.items():
        for target, line, _ in edges:
            if _layer(target) > _layer(module):
                wrong.append(f"{_where(module, line)}: {module} (layer {_layer(module)}) imports "
                             f"{target} (layer {_layer(target)})")
    assert not wrong, "imports that go up a layer:\n" + "\n".join(wrong)


def test_node_roles_do_not_import_each_other_except_the_journal_client():
    wrong = []
    for module, edges in GRAPH.items():
        role = _role(module)
        for target, line, _ in edges:
            other = _role(target)
            if role and other and other != role and target not in JOURNAL_CLIENT:
                wrong.append(f"{_where(module, line)}: {module} imports {target}")
    assert not wrong, "one node role borrowing another's module:\n" + "\n".join(wrong)


def test_package_init_files_import_nothing_at_import_time():
    wrong = [f"{_where(module, line)}: {module} imports {target}"
             for module, edges in GRAPH.items() if MODULES[module].name == "__init__.py"
             for target, line, top_level in edges if top_level]
    assert not wrong, "\n".join(wrong)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Groups of modules that import each other, round a cycle (each sorted)."""
    return [sorted(component)
            for component in graphs.strongly_connected(graph, lambda module: sorted(graph.get(module, ())))]


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle(package):
    graph = {module: {target for target, _, _ in edges if target != module} for module, edges in GRAPH.items()}
    cycles = [cycle for cycle in _cycles(graph) if any(member.split(".")[0] == package for member in cycle)]
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)
