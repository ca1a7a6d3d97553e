"""The folder tree is the architecture: pid_core's sub-packages form layers that import only
downwards, nothing imports in a cycle (module-level or inside functions), and pid_core never
imports the ComfyUI glue."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# pid_core's layers, lowest first; a module may import its own layer and the ones below.
LAYERS = ("errors", "network", "text", "files", "decoding", "frontends", "__init__", "__main__")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """Modules of this repository that ``path`` imports, anywhere in the file."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{a.name}" for a in node.names]
            found |= {n for n in names if n in MODULES} or ({target} if target in MODULES else set())
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in MODULES}
    return found - {me}


FILES = sorted([*ROOT.glob("pid_core/**/*.py"), *ROOT.glob("nodes/*.py")])
MODULES = {module_name(p) for p in FILES}
GRAPH = {module_name(p): imports(p) for p in FILES}


def layer(module: str) -> int:
    part = module.split(".")[1] if "." in module else "__init__"
    return LAYERS.index(part)


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m.startswith("pid_core")))
def test_pid_core_layers_import_only_downwards(module):
    for target in GRAPH[module]:
        assert target.startswith("pid_core"), f"{module} imports {target}: pid_core knows nothing of ComfyUI"
        assert layer(target) <= layer(module), (
            f"{module} (layer {LAYERS[layer(module)]}) imports {target} (layer {LAYERS[layer(target)]}), "
            f"a higher layer; move the shared piece down")


def test_no_import_cycles():
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m):
        state[m] = 1
        path.append(m)
        for t in sorted(GRAPH.get(m, ())):
            if state.get(t) == 1:
                cycle = path[path.index(t):] + [t]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        path.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)


def test_the_graph_is_read():
    """Guard against a parser that sees nothing: known edges are found."""
    assert "pid_core.decoding.memory" in GRAPH["pid_core.decoding.decoder"]
    assert "pid_core.network.config" in GRAPH["pid_core.files.detect"]
    assert "nodes.host" in GRAPH["nodes.pipeline"]
    assert "pid_core.decoding.decoder" in GRAPH["nodes.pipeline"]
