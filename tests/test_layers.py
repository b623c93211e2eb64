"""The import graph: every import of laion_hf (lazy ones included) goes down the layers, and no cycle remains.

A module may import its own package and any package of a lower layer. The
layers are the architecture (docs/architecture.md); a change that needs an
import upwards is a change to the architecture, made here on purpose.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "laion_hf"

#: Lowest first. Packages on one line are one layer: they may not import each other's layer-mates.
LAYERS = [
    ["core"],
    ["io"],
    ["models"],
    ["stages", "extract", "download"],
    ["runners"],
    ["steps", "clean"],
    ["recipes"],
    ["search", "hub"],
    ["build"],
    ["testing"],
    ["demo"],
    ["cli"],
]
LAYER_OF = {package: index for index, packages in enumerate(LAYERS) for package in packages}


def package_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "laion_hf" or len(parts) < 2:
        return None
    return parts[1]


def module_name(path: Path) -> str:
    relative = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(relative.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


SOURCES = sorted(p for p in ROOT.rglob("*.py") if "__pycache__" not in p.parts)
MODULES = {module_name(p) for p in SOURCES}


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every ``laion_hf`` import in a file, at any depth (``from pkg import mod`` is ``pkg.mod``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.append((node.lineno, submodule if submodule in MODULES else node.module))
    return [(line, module) for line, module in found if module.startswith("laion_hf.")]


def test_every_package_has_a_layer():
    packages = {package_of(module_name(p)) for p in SOURCES} - {None, "__main__"}
    assert packages - set(LAYER_OF) == set()


def test_no_import_runs_up_the_layers():
    wrong = []
    for path in SOURCES:
        own = package_of(module_name(path))
        if own is None:
            continue
        for line, module in imports_of(path):
            target = package_of(module)
            if target is None or target == own:
                continue
            if LAYER_OF[target] >= LAYER_OF[own]:
                wrong.append(f"{path.relative_to(ROOT.parent)}:{line}: {own} imports {module}")
    assert wrong == []


def test_no_import_cycle_between_modules():
    graph = {module_name(p): {m for _, m in imports_of(p)} for p in SOURCES}
    modules = set(graph)
    edges = {m: {t for t in targets if t in modules and t != m} for m, targets in graph.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                cycles.append(" -> ".join(trail[trail.index(target):] + [target]) if target in trail else target)
            elif target not in state:
                visit(target, trail + [target])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == []
