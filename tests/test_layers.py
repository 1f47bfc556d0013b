"""The package's import layers (``../shared/ARCHITECTURE.md``, "Layers"): a module imports only from its own
layer or below, and no two modules import each other, directly or round a circle. Function-level
imports count: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "edgekd"

# top (0) to bottom; a module belongs to the first prefix it starts with. Beyond ARCHITECTURE.md:
# ``runtimes`` (the host runtimes export and profile both run models on) sits with ``models``, which it
# loads; the bottom layer also holds the small leaf helpers every layer uses.
LAYERS: list[tuple[str, ...]] = [
    ("cli", "commands", "__main__"),
    ("pipeline", "search"),
    ("harness",),
    ("profile",),
    ("export",),
    ("distill", "timeseries"),
    ("models", "data", "metrics", "targets", "recipe", "runfolder", "networks", "inputs", "runtimes"),
    ("graph",),
    (
        "atomic",
        "errors",
        "yamlio",
        "registry",
        "native_io",
        "child",
        "codetrust",
        "files",
        "names",
        "safetext",
        "provenance",
        "console",
    ),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int | None:
    rest = module.split(".", 1)[1] if "." in module else ""
    for i, prefixes in enumerate(LAYERS):
        if any(rest == p or rest.startswith(p + ".") for p in prefixes):
            return i
    return None


def _resolve(name: str) -> str | None:
    """The longest module of the package that ``name`` (a module or a name inside one) refers to."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    """Every edgekd module ``module`` imports, at any depth of its code (a package's own ``__init__``
    imported by its children is not counted: importing ``a.b`` runs ``a`` first anyway)."""
    path = MODULES[module]
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            target = _resolve(name) if name.startswith("edgekd") else None
            if target and target != module and not module.startswith(target + "."):
                found.add(target)
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def test_every_module_has_a_layer():  # the root package only holds __version__
    unplaced = [m for m in MODULES if m != "edgekd" and layer_of(m) is None]
    assert not unplaced, f"add these modules to a layer in ARCHITECTURE.md and LAYERS: {unplaced}"


@pytest.mark.parametrize("module", [m for m in MODULES if layer_of(m) is not None])
def test_imports_point_down(module):
    layer = layer_of(module)
    upward = sorted(t for t in GRAPH[module] if layer_of(t) is not None and layer_of(t) < layer)
    assert not upward, f"{module} (layer {layer_of(module) + 1}) imports from a higher layer: {upward}"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while component[-1:] != [v]:
                component.append(stack.pop())
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    circles = _cycles(GRAPH)
    assert not circles, "modules that import each other: " + "; ".join(" <-> ".join(c) for c in circles)


def test_the_checker_sees_a_circle_and_an_upward_import():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer_of("edgekd.cli") < layer_of("edgekd.distill.losses.base") < layer_of("edgekd.errors")
    # a function-level import is found like a top-level one
    assert "edgekd.errors" in GRAPH["edgekd.names"]
