"""The package's import structure: no import runs up the floors, data/ and modeling/ do not
import each other, and no module imports itself through others (no circles). Imports inside
functions count: a deferred import is still a dependency."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "qanet_d2"

# Floors, lowest first: a module imports only modules of its own floor or below.
FLOORS = [
    ("qanet_d2.compat", "qanet_d2.structures", "qanet_d2.layers", "qanet_d2.weights_io", "qanet_d2.model_zoo",
     "qanet_d2.runtime"),
    ("qanet_d2.data", "qanet_d2.modeling"),
    ("qanet_d2.evaluation",),
    ("qanet_d2.engine", "qanet_d2.predictor", "qanet_d2.video", "qanet_d2.config"),
]
# Siblings on a floor that must not import each other.
APART = [("qanet_d2.data", "qanet_d2.modeling")]
# The one crossing allowed, with its reason: deriving FASSEG's fine labels runs the pretrained
# YuNet on the photos for their landmarks (dataset preparation, not the training pipeline).
ALLOWED_CROSSINGS = {("qanet_d2.data.datasets.fasseg_fine", "qanet_d2.modeling.detectors.yunet")}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules():
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(name: str, path: Path, modules) -> set:
    """The qanet_d2 modules ``name`` imports (at module level or inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = ".".join(base[: len(base) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            # "from package import submodule" imports the submodule
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target.startswith("qanet_d2") and target != name:
                found.add(target)
    return found


def _graph():
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _floor(name: str) -> int:
    for i, prefixes in enumerate(FLOORS):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return i
    return len(FLOORS)  # the package's __init__ and anything not placed: the top


def _in(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_every_module_has_a_floor():
    assert [m for m in _modules() if _floor(m) == len(FLOORS) and m != "qanet_d2"] == []


def test_no_import_runs_up_the_floors():
    up = sorted(f"{a} (floor {_floor(a)}) imports {b} (floor {_floor(b)})"
                for a, targets in _graph().items() for b in targets if _floor(b) > _floor(a))
    assert up == []


@pytest.mark.parametrize("pair", APART)
def test_siblings_do_not_import_each_other(pair):
    graph = _graph()
    crossing = sorted(f"{a} imports {b}" for a, targets in graph.items() for b in targets
                      for x, y in (pair, pair[::-1]) if _in(a, x) and _in(b, y) and (a, b) not in ALLOWED_CROSSINGS)
    assert crossing == []


def test_no_import_circles():
    graph = _graph()
    # a package's __init__ that imports its own modules is not a circle with them
    edges = {a: {b for b in targets if not _in(a, b) or a == b} for a, targets in graph.items()}
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert circles == []


def test_the_checker_sees_a_deferred_import(tmp_path):
    """The graph includes imports made inside functions (what breaks a circle at run time
    only hides it)."""
    graph = _graph()
    assert "qanet_d2.weights_io" in graph["qanet_d2.modeling.test_time_augmentation"]
    assert "qanet_d2.structures.label_sets" in graph["qanet_d2.modeling.qanet.parser"]
