"""Import structure of the ``app`` package: dependencies point one way (issue 12, item 6).

Every ``import`` statement of a module counts, those inside functions too: a lazy import keeps a
cycle from failing at import time but not from tying two layers together. The layers, lowest
first: ``app.errors``, ``app.constants`` and ``app.labels``; ``app.io`` (readers and writers); ``app.data``
(cases, datalists, checks); then transforms, networks, engines, inference, evaluation, the server,
the API and the CLI.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

APP = REPO_ROOT / "app"


def _modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the package (``app/_shipped`` holds none)."""
    found = {}
    for path in sorted(APP.rglob("*.py")):
        parts = path.relative_to(REPO_ROOT).with_suffix("").parts
        if "_shipped" in parts:
            continue
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, int]]:
    """``(module imported, line)`` for every ``app`` import in a module, anywhere in it;
    ``from app.x import y`` counts as importing ``app.x.y`` where that is a module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((sub if sub in MODULES else base, node.lineno))
    return [(target, line) for target, line in found if target == "app" or target.startswith("app.")]


def _unit(module: str) -> str:
    """The subpackage (``app.io``) or top-level module (``app.api``) a module belongs to."""
    return ".".join(module.split(".")[:2])


def _graph(unit_level: bool) -> dict[str, dict[str, list[str]]]:
    """source -> target -> ``["app/x.py:12", ...]``, between modules or between units."""
    graph: dict[str, dict[str, list[str]]] = {}
    for name, path in MODULES.items():
        for target, line in _imports(name, path):
            source, target = (_unit(name), _unit(target)) if unit_level else (name, target)
            where = f"{path.relative_to(REPO_ROOT)}:{line}"
            if source != target and target != "app" and where not in graph.get(source, {}).get(target, []):
                graph.setdefault(source, {}).setdefault(target, []).append(where)
    return graph


def _cycles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan 1972), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(set(graph) | {t for targets in graph.values() for t in targets}):
        if node not in index:
            visit(node)
    return found


def _describe(graph: dict[str, dict[str, list[str]]], cycles: list[list[str]]) -> str:
    lines = []
    for component in cycles:
        lines.append(" <-> ".join(component))
        lines += [f"  {a} -> {b}: {', '.join(graph[a][b])}" for a in component for b in component if b in graph.get(a, {})]
    return "\n".join(lines)


def test_the_import_scan_sees_the_package():
    graph = _graph(unit_level=True)
    assert {"app.io", "app.data", "app.inference", "app.errors"} <= set(MODULES)
    assert "app.io" in graph["app.data"]  # app/data/manifest.py writes atomically through app.io
    assert _cycles({"a": {"b": []}, "b": {"c": []}, "c": {"a": []}, "d": {"a": []}}) == [["a", "b", "c"]]


def test_no_import_cycle_between_subpackages():
    graph = _graph(unit_level=True)
    cycles = _cycles(graph)
    assert not cycles, "import cycles between app subpackages:\n" + _describe(graph, cycles)


def test_no_import_cycle_between_modules():
    graph = _graph(unit_level=False)
    cycles = _cycles(graph)
    assert not cycles, "import cycles between app modules:\n" + _describe(graph, cycles)


@pytest.mark.parametrize(("layer", "allowed"), [
    ("app.errors", set()),
    ("app.constants", set()),
    ("app.resources", set()),
    ("app.io", {"app.errors", "app.constants", "app.io"}),
    ("app.data", {"app.errors", "app.constants", "app.labels", "app.resources", "app.io", "app.data"}),
])
def test_low_layers_import_only_lower_ones(layer: str, allowed: set[str]):
    wrong = [f"{name} imports {target} ({MODULES[name].relative_to(REPO_ROOT)}:{line})"
             for name, path in MODULES.items() if _unit(name) == layer
             for target, line in _imports(name, path) if target != "app" and _unit(target) not in allowed]  # app: __version__
    assert not wrong, f"{layer} may import only {sorted(allowed) or 'nothing from app'}:\n" + "\n".join(wrong)


def test_every_module_imports():
    failed = {}
    for name in MODULES:
        try:
            importlib.import_module(name)
        except ImportError as err:
            if getattr(err, "name", None) and not str(err.name).startswith("app"):
                continue  # an optional third-party package (monailabel, highdicom) that is not installed
            failed[name] = repr(err)
    assert not failed, failed


def test_moved_names_keep_their_old_import_paths():
    from app.data.verify import InputError as from_verify
    from app.errors import InputError
    from app.inference import case_id_from_path as from_inference
    from app.io.readers import strip_volume_suffix, volume_format
    from app.io.save import save_label_map as from_save
    from app.io.writers import save_label_map

    assert from_verify is InputError and from_save is save_label_map
    assert from_inference("x/BraTS-GLI-00000-000-t2f.nii.gz") == "BraTS-GLI-00000-000"
    assert volume_format("a.MHA") == "metaimage" and strip_volume_suffix("ct_7.nii.gz") == "ct_7"
