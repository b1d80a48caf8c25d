"""The package's shape: no import cycle anywhere, counting the imports inside functions and under
TYPE_CHECKING too (that is where cycles hide), and the computation never imports the writing."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("writer_ext", "tensorboard_plugin_cam")
# what writes: only the writer, the monitor, the framework callbacks and the command lines may import it
WRITING = "writer_ext.summaries"
ABOVE_WRITING = ("writer_ext", "writer_ext.writer", "writer_ext.monitor", "writer_ext.cli", "writer_ext.demo",
                 "writer_ext.integrations")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every module of ours that `name` imports, anywhere in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    edges = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            edges.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                edges.add(sub if sub in modules else base)
    return {e for e in edges if e in modules and e != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_the_walk_sees_the_package():
    graph = _graph()
    assert {"writer_ext.engine", "writer_ext.model.layers", "tensorboard_plugin_cam.format"} <= set(graph)
    assert "writer_ext.model.spatial" in graph["writer_ext.model.layers"] | graph["writer_ext.model.default_layer"]


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for other in sorted(graph[name]):
            if state.get(other) == 1:
                cycle = path[path.index(other):] + [other]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if other not in state:
                visit(other)
        path.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_the_walk_finds_a_cycle(tmp_path):
    """The walk can fail: a deferred import inside a function is an edge like any other."""
    source = {"a": "import b\n", "b": "def f():\n    from a import x\n"}
    modules = {name: tmp_path / f"{name}.py" for name in source}
    for name, text in source.items():
        modules[name].write_text(text)
    assert _imports("a", modules["a"], modules) == {"b"}
    assert _imports("b", modules["b"], modules) == {"a"}


def test_computing_never_imports_writing():
    graph = _graph()
    below = sorted(name for name, edges in graph.items()
                   if name.startswith("writer_ext") and not name.startswith(WRITING)
                   and not any(name == a or name.startswith(a + ".") and a != "writer_ext" for a in ABOVE_WRITING)
                   and any(e == WRITING or e.startswith(WRITING + ".") for e in edges))
    assert below == [], f"these modules below summaries/ import it: {below}"


def test_every_module_loads_from_this_tree():
    """Importing each module of ours loads only files of this checkout (a module left behind under an old
    name elsewhere on the path, e.g. an older editable install, would hide a broken import)."""
    import importlib
    import sys

    for name in sorted(_modules()):
        if name.startswith("writer_ext.integrations.") or name == "writer_ext.demo":
            continue  # the framework callbacks import their framework
        importlib.import_module(name)
    strays = sorted(name for name, module in sys.modules.items()
                    if name.split(".")[0] in PACKAGES and getattr(module, "__file__", None)
                    and not Path(module.__file__).resolve().is_relative_to(ROOT))
    assert strays == []
