"""Optional `torch.compile` of the per-frame hot spots: the SAM-2 mask decoder and memory attention, which run
once per frame and expression-batch with small, fixed shapes (the LLM is not compiled: its KV cache grows).

Compiled in place (`nn.Module.compile`): parameter names, exports and checkpoints are unchanged. `dynamic=True`
so that the expression batch and the memory's length (it grows until the bank is full) do not recompile every
frame. Tested equal to the uncompiled model (tests/test_compile.py).
"""
from __future__ import annotations

from torch import nn


def compiled_parts(model) -> dict[str, nn.Module]:
    """{name: module} of what `compile_hot_spots` compiles: the mask decoder, and the memory attention when the
    model's memory has one (the SAM-2 bank)."""
    sam = model.segmenter.sam
    parts = {"mask_decoder": sam.sam_mask_decoder}
    if getattr(sam, "memory_attention", None) is not None:
        parts["memory_attention"] = sam.memory_attention
    return parts


def compile_hot_spots(model, backend: str = "inductor", mode: str | None = None) -> list[str]:
    """Compile the parts in place; returns their names."""
    parts = compiled_parts(model)
    for module in parts.values():
        module.compile(backend=backend, mode=mode, dynamic=True)
    return sorted(parts)
