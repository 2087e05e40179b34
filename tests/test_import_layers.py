"""The package layers of dsflow import one way only.

Every ``import dsflow.X`` / ``from dsflow.X import ...`` is collected, at module level and
inside functions (lazy imports are still dependencies: a cycle through a function-level
import only moves the failure to the first call), and mapped to the top-level part of
``dsflow`` it lives in (``flow``, ``functionals``, ``state``, ``ot``, ...).  The graph of
those parts must be acyclic: e.g. `dsflow.state` sits below both `dsflow.flow` and
`dsflow.functionals`, so neither needs the other's modules to hold a state.
"""

from __future__ import annotations

import ast
from pathlib import Path

import dsflow

ROOT = Path(dsflow.__file__).resolve().parent


def _part(module: str) -> str | None:
    """``dsflow.flow.engine`` -> ``flow``; ``dsflow`` itself (the lazy facade) -> None."""
    names = module.split(".")
    return names[1] if names[0] == "dsflow" and len(names) > 1 else None


def _imports(path: Path, package: str) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.add(module)
            if module == "dsflow":  # from dsflow import state -> the part is the name
                out.update(f"dsflow.{alias.name}" for alias in node.names)
    return {m for m in out if m == "dsflow" or m.startswith("dsflow.")}


def part_graph() -> dict[str, dict[str, list[str]]]:
    """``{part: {imported part: [files that import it]}}`` over every module of dsflow."""
    graph: dict[str, dict[str, list[str]]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        module = ".".join(rel.parts)
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        if path.name == "__init__.py":
            module = package.removesuffix(".__init__")
            package = module
        src = _part(module)
        if src is None:
            continue
        for imported in _imports(path, package):
            dst = _part(imported)
            if dst is not None and dst != src:
                graph.setdefault(src, {}).setdefault(dst, []).append(str(rel))
    return graph


def find_cycle(graph: dict[str, dict[str, list[str]]]) -> list[str] | None:
    """One cycle ``[a, b, ..., a]`` of the graph, or None (depth-first search)."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = GREY
        stack.append(node)
        for nxt in sorted(graph.get(node, {})):
            if colour.get(nxt, WHITE) == GREY:
                return stack[stack.index(nxt):] + [nxt]
            if colour.get(nxt, WHITE) == WHITE:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        colour[node] = BLACK
        return None

    for node in sorted(graph):
        if colour.get(node, WHITE) == WHITE:
            found = visit(node)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b": []}, "b": {"c": []}, "c": {"a": []}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": []}, "b": {"c": []}}) is None


def test_flow_and_functionals_do_not_import_each_other():
    graph = part_graph()
    assert "flow" not in graph.get("functionals", {}), (
        f"dsflow.functionals imports dsflow.flow in {graph['functionals']['flow']}: functionals need the "
        "state (dsflow.state), not the engine; import ParticleState from dsflow.state")
    assert "state" in graph.get("functionals", {}) and "state" in graph.get("flow", {})
    assert not graph.get("state", {}).keys() - {"data"}, "dsflow.state must stay below flow and functionals"


def test_dsflow_parts_form_no_import_cycle():
    graph = part_graph()
    cycle = find_cycle(graph)
    if cycle:
        edges = "; ".join(f"{a} -> {b} ({', '.join(graph[a][b][:3])})" for a, b in zip(cycle, cycle[1:]))
        raise AssertionError(f"import cycle between dsflow parts: {' -> '.join(cycle)}: {edges}. Move what both "
                             "need into a part below both (as dsflow.state is below flow and functionals)")
