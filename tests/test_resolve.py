"""The one {class_path, init_args} resolver (glus.model.resolve): classes that moved still load under the path
exports written before the move name, and every committed checkpoint loads."""
from pathlib import Path

import pytest
import yaml

from glus.model.memory import GatedLinearMemory, Memory, SAM2MemoryBank, build_memory
from glus.model.resolve import MOVED, instantiate, resolve_class

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = sorted(p.parent for p in (ROOT / "checkpoints").rglob("recipe.yaml"))


def test_every_moved_path_names_the_class_at_its_new_path():
    import glus.model.build.published as published
    import glus.model.build.tiny as tiny

    expected = {"TinyGLUSBuilder": tiny.TinyGLUSBuilder, "LisaGLUSBuilder": published.LisaGLUSBuilder,
                "RandomWeightsGLUSBuilder": published.RandomWeightsGLUSBuilder}
    assert {old.rpartition(".")[2] for old in MOVED} == set(expected)
    for old, new in MOVED.items():
        assert resolve_class(old) is resolve_class(new) is expected[old.rpartition(".")[2]]


def test_nested_specs_are_built_and_the_base_class_is_checked():
    spec = {"class_path": "glus.model.memory.gated_linear.GatedLinearMemory", "init_args": {"key_dim": 8}}
    memory = instantiate(spec, base=Memory)
    assert isinstance(memory, GatedLinearMemory) and memory.key_dim == 8
    assert isinstance(build_memory({"num_memories": 3}), SAM2MemoryBank)
    with pytest.raises(ValueError, match="is not a glus.model.memory.base.Memory"):
        build_memory({"class_path": "glus.model.build.tiny.TinyGLUSBuilder"})
    with pytest.raises(ValueError, match="names no class"):
        resolve_class("glus.model.nowhere.Thing")


def test_a_committed_checkpoint_names_a_moved_class():
    # the alias table is exercised by real data, not only by the table itself
    paths = {yaml.safe_load((f / "recipe.yaml").read_text())["model"]["init_args"]["builder"]["class_path"]
             for f in COMMITTED}
    assert paths & set(MOVED), paths


@pytest.mark.parametrize("folder", COMMITTED, ids=lambda p: p.name)
def test_every_committed_checkpoint_loads_strictly(folder):
    from glus.model.weights.load import load_export

    model, _, recipe = load_export(folder)  # raises on a missing or unknown trained tensor
    assert not model.training
    assert recipe["model"]["init_args"]["builder"]["class_path"]
