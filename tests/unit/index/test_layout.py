"""The index's modules form a layered graph: no import cycle, and none dodged by a late import."""

from __future__ import annotations

import ast
from graphlib import TopologicalSorter

from support import REPO

PACKAGE = REPO / "orbithash" / "index"


def index_imports(node: ast.AST) -> set[str]:
    """Modules of orbithash.index that ``node`` imports (``from orbithash.index import mih`` counts as mih)."""
    found: set[str] = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.ImportFrom) and sub.module and sub.module.startswith("orbithash.index"):
            if sub.module == "orbithash.index":
                found |= {alias.name for alias in sub.names if (PACKAGE / f"{alias.name}.py").exists()}
            else:
                found.add(sub.module.split(".")[2])
        elif isinstance(sub, ast.Import):
            found |= {a.name.split(".")[2] for a in sub.names if a.name.startswith("orbithash.index.")}
    return found


def modules() -> dict[str, ast.Module]:
    return {p.stem: ast.parse(p.read_text()) for p in PACKAGE.glob("*.py") if p.stem != "__init__"}


def test_imports_are_at_module_level() -> None:
    for name, tree in modules().items():
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.If):
                assert not index_imports(node), f"{name} imports {index_imports(node)} late"


def test_no_import_cycle_and_kernels_at_the_bottom() -> None:
    graph = {name: index_imports(tree) for name, tree in modules().items()}
    order = list(TopologicalSorter(graph).static_order())  # raises CycleError on a cycle
    assert graph["kernels"] == set()
    assert not graph["mih"] & {"hamming", "planner", "scan"}
    assert not graph["scan"] & {"hamming", "planner", "mih"}
    assert order.index("hamming") > order.index("planner") > order.index("mih")
