"""The package's layers (../shared/DESIGN.md): every import in glus/, top-level or inside a function, is checked
against them, so a shortcut across layers or a circle fails here.

    base modules (errors, io, transforms, vocabulary)
    data -> model -> infer -> eval -> train -> studies | tools -> commands -> cli

Each layer may import the ones left of it; studies (experiments: the ablation, held-out tables, probes) and tools
(self-measurement: bench, the GPU check, the FLOP model, the install check) never import each other."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "glus"
ORDER = ["glus.data", "glus.model", "glus.infer", "glus.eval", "glus.train", "glus.studies", "glus.tools",
         "glus.commands", "glus.cli"]
BASE = ("glus.errors", "glus.io", "glus.transforms", "glus.vocabulary")
ROOT_FILES = {"__init__.py", "__main__.py", "cli.py", *(f"{m.split('.')[1]}.py" for m in BASE)}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path) -> set[str]:
    """The glus modules a file imports (`from pkg import submodule` counts as the submodule)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.update(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                         for a in node.names)
    return {n for n in names if n.startswith("glus")}


def layer_of(name: str) -> str | None:
    return next((layer for layer in ORDER if name == layer or name.startswith(layer + ".")), None)


def forbidden(layer: str) -> tuple[str, ...]:
    """The layers right of `layer`; tools, right of studies, may not import them either (side by side)."""
    return tuple(ORDER[ORDER.index(layer) + 1:]) + (("glus.studies",) if layer == "glus.tools" else ())


@pytest.mark.parametrize("layer", ORDER)
def test_layers_import_only_downward(layer):
    files = [p for name, p in MODULES.items() if layer_of(name) == layer]
    assert files, layer
    bad = sorted(f"{module_name(p)} imports {name}" for p in files for name in imports_of(p)
                 if layer_of(name) in forbidden(layer))
    assert not bad, "\n".join(bad)


def test_base_modules_import_no_layer():
    bad = sorted(f"{m} imports {n}" for m in BASE for n in imports_of(MODULES[m]) if layer_of(n))
    assert not bad, "\n".join(bad)


def test_the_package_root_holds_only_the_command_line_and_base_modules():
    assert {p.name for p in PACKAGE.glob("*.py")} <= ROOT_FILES
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and any(p.glob("*.py"))} == \
        {name.split(".")[1] for name in ORDER if name != "glus.cli"}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import circles (strongly connected components of more than one module, or a module importing itself)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(sorted(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles():
    graph = {name: {n for n in imports_of(p) if n in MODULES} for name, p in MODULES.items()}
    assert cycles(graph) == []


def test_the_circle_check_finds_a_circle_through_three_modules():
    # the circle this layout removed: factory -> load -> released -> factory (through function-level imports)
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_checker_sees_imports_inside_functions():
    # glus.model.build.published imports transformers' AutoTokenizer in a method; glus.tools.bench imports
    # glus.tools.bench_vos inside a function
    assert "glus.tools.bench_vos" in imports_of(PACKAGE / "tools" / "bench.py")
