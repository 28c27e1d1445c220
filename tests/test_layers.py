"""The layer order of docs/ARCHITECTURE.md, checked on every module's imports (function-local ones included).

A module may import modules of its own layer or of a lower one, never a higher one, and the import graph between
modules has no cycle. A new top-level module must be given its place in LAYERS (and in docs/ARCHITECTURE.md).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dse"

# Lowest first; an entry covers the module and, for a package, everything below it.
LAYERS = [
    "dse.errors",
    "dse.threads",
    "dse.layer_config",
    "dse.arith",
    "dse.model",
    "dse.kernels",
    "dse.quant",
    "dse.correction",
    "dse.energy",
    "dse.data",
    "dse.config",
    "dse.session",
    "dse.prefix_cache",
    "dse.emulate",
    "dse.predict",
    "dse.budget",
    "dse.search",
    "dse.report",
    "dse.plots",
    "dse.present",
    "dse.cli",
]
RANK = {name: i for i, name in enumerate(LAYERS)}
RANK["dse._kernels"] = -1  # the compiled extension imports no dse module: any layer may call its loops
RANK["dse"] = -1  # the package root only holds the version


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PACKAGE.rglob("*.py")):
        parts = p.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _resolve(name: str) -> str:
    """The module a dotted import target refers to (``dse.x.Y`` -> ``dse.x`` when ``Y`` is a name in it)."""
    while name not in MODULES and name not in RANK and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def imports_of(module: str) -> set[str]:
    """The dse modules ``module`` imports anywhere in its source (module level, functions, TYPE_CHECKING blocks)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        out |= {_resolve(t) for t in targets if t == "dse" or t.startswith("dse.")}
    out.discard(module)
    return out


def rank(module: str) -> int:
    while module not in RANK:
        if "." not in module:
            raise KeyError(module)
        module = module.rsplit(".", 1)[0]
    return RANK[module]


GRAPH = {m: imports_of(m) for m in MODULES}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_has_a_layer(module):
    try:
        rank(module)
    except KeyError:
        pytest.fail(f"{module} is not placed in LAYERS (tests/test_layers.py) nor in docs/ARCHITECTURE.md's layer order")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_upward_import(module):
    mine = rank(module)
    up = sorted(t for t in GRAPH[module] if rank(t) > mine)
    assert not up, f"{module} (layer {mine}) imports higher layers: {up}"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as [a, b, ..., a], or None (depth-first search)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(m):
        state[m] = 1
        path.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                return path[path.index(t):] + [t]
            if t in graph and t not in state:
                found = visit(t)
                if found:
                    return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_no_import_cycle():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_checker_sees_local_and_relative_imports(tmp_path, monkeypatch):
    """The checker would catch what it is for: a function-local upward import and a cycle through relative imports."""
    pkg = tmp_path / "dse"
    (pkg / "search").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("def f():\n    from dse.cli import main\n")
    (pkg / "search" / "__init__.py").write_text("from .study import run\n")
    (pkg / "search" / "study.py").write_text("from . import space\n")
    (pkg / "search" / "space.py").write_text("from .study import run\n")
    mods = {}
    for p in sorted(pkg.rglob("*.py")):
        parts = p.relative_to(tmp_path).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    monkeypatch.setitem(globals(), "MODULES", mods)
    assert imports_of("dse.errors") == {"dse.cli"} and rank("dse.cli") > rank("dse.errors")
    assert imports_of("dse.search.study") == {"dse.search.space"}
    assert imports_of("dse.search.space") == {"dse.search.study"}
    graph = {m: imports_of(m) for m in mods}
    cycle = find_cycle(graph)
    assert cycle[0] == cycle[-1] and set(cycle) == {"dse.search.space", "dse.search.study"}
    del graph["dse.search.space"]
    assert find_cycle(graph) is None
