"""Dependencies point downward only (../shared/DESIGN.md): every import in glus/, top-level or inside a
function, is checked against the layer rules, so a shortcut across layers fails here."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "glus"
# the command line and the check scripts
TOP = ("glus.cli", "glus.commands", "glus.bench", "glus.gpu_check", "glus.gpu_parts", "glus.gpu_report")
FORBIDDEN = {  # layer -> packages it must never import
    "glus.data": ("glus.model", "glus.train", "glus.infer", "glus.eval", *TOP),
    "glus.model": ("glus.data", "glus.train", "glus.infer", "glus.eval", *TOP),
    "glus.infer": ("glus.train", "glus.eval", *TOP),
    "glus.eval": ("glus.train", *TOP),
    "glus.bench": ("glus.train", "glus.cli", "glus.commands"),
    "glus.train": TOP,
}


def imports_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layers_import_only_downward(layer):
    files = [p for p in PACKAGE.rglob("*.py") if module_name(p) == layer or module_name(p).startswith(layer + ".")]
    assert files, layer
    bad = sorted(f"{module_name(p)} imports {name}" for p in files for name in imports_of(p)
                 if name.startswith(FORBIDDEN[layer]) and not name.startswith(layer))
    assert not bad, "\n".join(bad)


def test_the_checker_sees_imports_inside_functions():
    assert "glus.model.released" in imports_of(PACKAGE / "model" / "load.py")  # imported in load_model's body
