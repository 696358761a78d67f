"""The structure docs/architecture.md describes, checked on the source: every module's imports
(parsed with ``ast``, so lazy imports inside functions and ``TYPE_CHECKING`` imports count too)
form no circle, run from no lower layer to a higher one, and no module under src/ is over 450
lines. A known exception is listed with the work that removes it; once that work lands the
test fails until the entry is deleted, so the list only shrinks."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_LINES = 450

# Top to bottom: a module may import its own layer or a lower one, never a higher one.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("cli", "__main__"),
    ("serving", "ray", "bench", "precision", "evaluation", "batch_predict", "pipeline"),
    ("segmenter", "pipeline_config", "model_resolution", "slide", "inputs", "video", "demo_data"),
    ("convert", "download"),  # the build side: model_resolution converts a zoo model on demand
    ("engines", "head", "processing", "graph_edit", "results"),
    ("model_dir", "zoo", "reference", "palettes", "files", "tempdirs", "output_names", "errors", "offline", "fetch", "png_decode",
     "png_split", "_png_kernels", "_deflate_kernels", "jit"),
)

KNOWN_CYCLE_EDGES: dict[tuple[str, str], str] = {}  # (module, imported module) closing a circle -> the work that removes it
KNOWN_UPWARD: dict[tuple[str, str], str] = {}  # (module, imported module) -> the work that removes the upward import
KNOWN_LONG: dict[str, str] = {}  # path under src/ -> the work that splits it


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / "fastseg").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The fastseg modules ``name`` imports. ``from pkg import sub`` counts as ``pkg.sub`` (a
    submodule), not as ``pkg``'s ``__init__``, which Python has already started running."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            subs = {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules}
            found.update(subs)
            if len(subs) < len(node.names):
                found.add(base)
    resolved = set()
    for target in found:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name:
            resolved.add(target)
    return resolved


def import_graph() -> dict[str, set[str]]:
    """fastseg's module import graph: module -> the fastseg modules it imports."""
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (graphlib's), or None."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        return list(exc.args[1])
    return None


def _edges(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {(module, target) for module, targets in graph.items() for target in targets}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None  # the package's own __init__: the public re-exports, above every layer
    for rank, layer in enumerate(LAYERS):
        if parts[1] in layer:
            return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and to docs/architecture.md")


def test_the_import_graph_is_read() -> None:
    edges = _edges(import_graph())
    assert {("fastseg.segmenter", "fastseg.engines"), ("fastseg.cli.app", "fastseg.cli.predict")} <= edges
    assert ("fastseg.cli.predict", "fastseg.segmenter") in edges  # an import inside a function counts too
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) is not None and _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circle() -> None:
    graph = import_graph()
    for module, target in KNOWN_CYCLE_EDGES:
        graph[module].discard(target)
    assert _cycle(graph) is None, f"import circle: {' -> '.join(_cycle(graph) or [])}"
    for module, target in KNOWN_CYCLE_EDGES:  # each known edge still closes a circle, or it goes
        assert _cycle({**graph, module: graph[module] | {target}}) is not None, f"delete {module} -> {target}"


def test_no_import_from_a_lower_layer_to_a_higher_one() -> None:
    upward = set()
    for module, target in _edges(import_graph()):
        here, there = _layer(module), _layer(target)
        if here is not None and there is not None and there < here:
            upward.add((module, target))
    assert upward - KNOWN_UPWARD.keys() == set(), "import(s) from a lower layer to a higher one"
    assert KNOWN_UPWARD.keys() - upward == set(), "a known upward import is gone: delete it from KNOWN_UPWARD"


@pytest.mark.parametrize("path", sorted((SRC / "fastseg").rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_no_module_over_450_lines(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    rel = path.relative_to(SRC).as_posix()
    if rel in KNOWN_LONG:
        assert lines > MAX_LINES, f"{rel} is {lines} lines now: delete it from KNOWN_LONG"
    else:
        assert lines <= MAX_LINES, f"{rel} has {lines} lines: split it by concern"
