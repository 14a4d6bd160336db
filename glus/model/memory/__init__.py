from contextlib import contextmanager

from glus.model.memory.base import Memory, MemoryState
from glus.model.memory.sam2_bank import SAM2BankState, SAM2MemoryBank, memory_steps
from glus.model.memory.none import NoMemory
from glus.model.memory.gated_linear import GatedLinearMemory, GatedLinearState
from glus.model.memory.mca import MCAMemory, MCAState
from glus.model.resolve import instantiate


@contextmanager
def memory_off(model):
    """`model` (whose `segmenter` holds a memory) with `NoMemory` in its place, every frame decoded as the first of
    a pass: the control that says whether the memory carries anything between frames. Put back after."""
    seg = model.segmenter
    original, control = seg.memory, NoMemory()
    control.bind(seg.sam)
    seg.memory = control
    try:
        yield model
    finally:
        seg.memory = original
        original.bind(seg.sam)


def build_memory(spec=None) -> Memory:
    """A memory from a recipe's setting: None (the published GLUS bank), "none" (no memory: the ablation's rows
    without one), a Memory, a dict of SAM2MemoryBank arguments, or {class_path, init_args} (LightningCLI's form,
    for any Memory subclass)."""
    if spec is None:
        return SAM2MemoryBank()
    if spec == "none":
        return NoMemory()
    if isinstance(spec, Memory):
        return spec
    if isinstance(spec, dict) and "class_path" in spec:
        return instantiate(spec, base=Memory)
    if isinstance(spec, dict):
        return SAM2MemoryBank(**spec)
    raise ValueError(f"memory: expected None, 'none', a dict or a Memory, got {spec!r}")


__all__ = ["MCAMemory", "MCAState", "GatedLinearMemory", "GatedLinearState", "Memory", "MemoryState", "NoMemory", "SAM2BankState",
           "SAM2MemoryBank", "build_memory", "memory_off", "memory_steps"]
