"""The edge package's import graph: no cycle between its modules or its subpackages, and nothing
from the cloud side or the training stack (the rules `lint-imports` checks, here in the test run).
"""

from __future__ import annotations

import grimp

TRAINING = ("forecaster", "torch", "pandas", "statsmodels", "arch", "onnx", "matplotlib")


def _graph() -> grimp.ImportGraph:
    return grimp.build_graph("device", include_external_packages=True)


def _sibling_edges(graph: grimp.ImportGraph, package: str) -> dict[str, set[str]]:
    """Imports between the children of `package`, each child with everything under it."""
    children = sorted(graph.find_children(package))

    def owner(module: str) -> str | None:
        return next((c for c in children if module == c or module.startswith(c + ".")), None)

    edges: dict[str, set[str]] = {c: set() for c in children}
    for module in graph.find_descendants(package):
        here = owner(module)
        for imported in graph.find_modules_directly_imported_by(module):
            there = owner(imported)
            if here and there and here != there:
                edges[here].add(there)
    return edges


def _cycle(edges: dict[str, set[str]]) -> list[str]:
    """One cycle in `edges` (depth-first search), or []."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return []

    for start in sorted(edges):
        if start not in state and (found := visit(start)):
            return found
    return []


def test_no_cycle_between_the_modules_or_subpackages_of_device() -> None:
    graph = _graph()
    packages = [
        p for p in sorted(graph.modules) if p.startswith("device") and graph.find_children(p)
    ]
    assert "device.agent" in packages and "device.plugins" in packages
    cycles = {p: c for p in packages if (c := _cycle(_sibling_edges(graph, p)))}
    assert cycles == {}


def test_device_never_imports_the_cloud_side_or_the_training_stack() -> None:
    graph = _graph()
    found = {m for m in graph.modules if m.split(".")[0] in TRAINING}
    assert found == set()
