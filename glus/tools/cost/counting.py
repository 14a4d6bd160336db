"""The counting primitives of the cost model: a FlopCounterMode that also knows the CPU attention kernels
(`counter`, `count_flops`), the meta-device helpers (`as_meta`, `_meta`, `_dtype`) and `_Tally`, which
attributes the FLOPs counted to named parts (CLIP, LLM, SAM-2 encoder, decoder, memory) by wrapping a model's
stage methods."""
from __future__ import annotations

import copy
from collections import defaultdict
from contextlib import ExitStack, contextmanager

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

aten = torch.ops.aten


def _cpu_attention(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_attention_backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None,
                            **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


# CPU attention kernels FlopCounterMode has no formula for: torch's own SDPA formulas (as for the CUDA kernels)
CPU_ATTENTION = {aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention,
                 aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward}


def counter() -> FlopCounterMode:
    """A FlopCounterMode that also counts the CPU attention kernel (see the package docstring)."""
    return FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION)


def count_flops(fn, *args, **kwargs) -> tuple[object, int]:
    """(fn's result, FLOPs it ran)."""
    with counter() as fc:
        out = fn(*args, **kwargs)
    return out, fc.get_total_flops()


def as_meta(model: nn.Module) -> nn.Module:
    """The model itself when it is on the meta device, else a copy moved there (the model is left as it is)."""
    if next(model.parameters()).device.type == "meta":
        return model
    return copy.deepcopy(model).to("meta")


def _meta(*shape, dtype=torch.float32) -> torch.Tensor:
    return torch.empty(*shape, device="meta", dtype=dtype)


def _dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


# ---- attributing FLOPs to parts --------------------------------------------------------------------------

class _Tally:
    """One FlopCounterMode and a running total per part: `part(name)` adds what runs inside it (outermost
    part only: a part inside another is its own, and the outer one gets the rest)."""

    def __init__(self):
        self.mode = counter()
        self.parts: dict[str, int] = defaultdict(int)
        self._stack: list[list] = []

    @contextmanager
    def part(self, name: str):
        start = self.mode.get_total_flops()
        frame = [name, 0]  # flops of nested parts
        self._stack.append(frame)
        try:
            yield
        finally:
            self._stack.pop()
            spent = self.mode.get_total_flops() - start
            self.parts[name] += spent - frame[1]
            if self._stack:
                self._stack[-1][1] += spent

    @contextmanager
    def wrap(self, obj, method: str, name: str):
        """Calls of obj.method count as part `name` (an instance attribute shadows the method meanwhile)."""
        fn = getattr(obj, method)

        def counted(*args, **kwargs):
            with self.part(name):
                return fn(*args, **kwargs)
        object.__setattr__(obj, method, counted)
        try:
            yield
        finally:
            object.__delattr__(obj, method)


def _wrap_model(tally: _Tally, stack: ExitStack, model) -> None:
    """Attribute the stages of a GLUS (or a VOSModel's segmenter) to their parts."""
    segmenter = model.segmenter
    if hasattr(model, "mllm"):
        stack.enter_context(tally.wrap(model.mllm, "encode_frames", "clip"))
        stack.enter_context(tally.wrap(model.mllm, "hidden_states", "llm"))
        stack.enter_context(tally.wrap(model.mllm, "logits_at", "lm_head"))
        stack.enter_context(tally.wrap(model, "seg_prompts", "seg_projection"))
    _wrap_segmenter(tally, stack, segmenter, "")


def _wrap_segmenter(tally: _Tally, stack: ExitStack, segmenter, prefix: str) -> None:
    stack.enter_context(tally.wrap(segmenter, "encode_image", prefix + "sam_encoder"))
    stack.enter_context(tally.wrap(segmenter, "step", prefix + "decode"))  # what read and write leave
    stack.enter_context(tally.wrap(segmenter.memory, "read", prefix + "memory_read"))
    stack.enter_context(tally.wrap(segmenter.memory, "write", prefix + "memory_write"))
