"""The package's folders show its architecture, and the imports keep it true.

Each subpackage may import only from the subpackages below it (``LAYERS``); the pure
modules import nothing with effects; no module imports itself back through others. Every
import counts, also one inside a function (the CLI's lazy imports included).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "dcmsortd"

# subpackage -> the subpackages it may import from (besides itself)
LAYERS: dict[str, set[str]] = {
    "model": set(),
    "dicom": {"model"},
    "rules": {"model"},
    "intake": {"model"},
    "sorting": {"model", "dicom", "rules"},
    "completion": {"model", "dicom", "rules", "sorting"},
    "service": {"model", "dicom", "rules", "intake", "sorting", "completion"},
    "batch": {"model", "dicom", "rules", "intake", "sorting", "completion", "service"},
    "cli": {"model", "dicom", "rules", "intake", "sorting", "completion", "service", "batch"},
}
# the pure core: functions of their inputs, importing only the shared types
PURE = {
    "dcmsortd.sorting.layout": {"model"},
    "dcmsortd.sorting.series": {"model"},
    "dcmsortd.rules.engine": {"model", "rules"},
    "dcmsortd.model.notice": {"model"},
    "dcmsortd.intake.dcmtklog": {"model"},
    "dcmsortd.completion.tracker": set(),
    "dcmsortd.completion.hooks": set(),
    "dcmsortd.completion.events": {"completion"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every dcmsortd module ``path`` imports, resolved to module names."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("dcmsortd")}
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path.name}: relative import; use dcmsortd.<pkg>.<module>"
            if node.module.startswith("dcmsortd"):
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    found.add(sub if sub in MODULES else node.module)
    return found


MODULES = {module_name(p) for p in PACKAGE.rglob("*.py")}
GRAPH = {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else None


def test_every_module_lives_in_a_layer() -> None:
    loose = sorted(m for m in MODULES if layer(m) is None and m != "dcmsortd")
    assert loose == [], f"modules outside the subpackages of LAYERS: {loose}"
    assert {m.split(".")[1] for m in MODULES if m.count(".") >= 1} <= set(LAYERS)


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down_the_layers(module: str) -> None:
    own = layer(module)
    if own is None:
        return
    allowed = LAYERS[own] | {own}
    wrong = sorted(m for m in GRAPH[module] if layer(m) not in allowed and m != "dcmsortd")
    assert wrong == [], f"{module} ({own}) may not import {wrong}"


@pytest.mark.parametrize("module", sorted(PURE))
def test_the_pure_core_imports_nothing_with_effects(module: str) -> None:
    wrong = sorted(m for m in GRAPH[module] if layer(m) not in PURE[module])
    assert wrong == [], f"{module} is pure and may not import {wrong}"


def test_no_import_cycles() -> None:
    state: dict[str, int] = {}  # 1 on the path, 2 done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(GRAPH.get(node, ())):
            if nxt not in GRAPH:
                continue
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for start in sorted(GRAPH):
        if start not in state:
            visit(start, [start])
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_checks_see_a_wrong_import() -> None:
    """The graph really contains the imports (a check that cannot fail is no check)."""
    assert "dcmsortd.model.errors" in GRAPH["dcmsortd.service.daemon"]
    assert "dcmsortd.cli.commands" in GRAPH["dcmsortd.cli.main"]  # a lazy import counts
    assert layer("dcmsortd.cli.main") not in LAYERS["sorting"] | {"sorting"}
