"""Training FLOPs and memory per sample: `TrainingSettings`, the accounting of the tensors autograd saves for
the backward (`_SavedTensors`, `_FusedAttention`), the meta batches of a GLUS or VOS clip, `training_costs`
(the real forward and backward on a meta copy) and `memory_costs` (parameters, gradients, AdamW states,
activations)."""
from __future__ import annotations

from collections import defaultdict
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from glus.tools.cost.counting import _dtype, _meta, _Tally, _wrap_model, as_meta
from glus.tools.cost.stages import DEFAULT_EXPRESSION, _full_mask, prompt_builder

@dataclass
class TrainingSettings:
    num_context: int = 4
    num_query: int = 4
    expressions: int = 3          # expressions per clip (the data's max_expressions)
    gradient_checkpointing: bool = False
    expression: str = DEFAULT_EXPRESSION
    label_mode: str = "seg"


class _SavedTensors:
    """Bytes of the tensors autograd saves for the backward, each storage once, parameters excluded; inside
    scaled_dot_product_attention only what a fused kernel keeps (q, k, v, output, log-sum-exp), and only where
    autograd saves anything there (not inside a checkpointed layer's first forward)."""

    def __init__(self, model: nn.Module):
        self.params = {p.untyped_storage()._cdata for p in model.parameters()}
        self.storages: dict[int, object] = {}  # the storage objects are held: no address is reused meanwhile
        self.extra = 0  # what fused attention keeps besides its inputs and output: the log-sum-exp
        self.attention = 0  # open scaled_dot_product_attention calls
        self.packed_in_attention = False

    def add(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        if storage._cdata not in self.params:
            self.storages[storage._cdata] = storage

    def pack(self, t: torch.Tensor):
        if self.attention:  # the math path's own tensors: see _FusedAttention
            self.packed_in_attention = True
        else:
            self.add(t)
        return t

    @property
    def bytes(self) -> int:
        return sum(s.nbytes() for s in self.storages.values()) + self.extra


class _FusedAttention(TorchFunctionMode):
    def __init__(self, saved: _SavedTensors):
        super().__init__()
        self.saved = saved

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention:
            return func(*args, **kwargs)
        saved = self.saved
        saved.attention += 1
        saved.packed_in_attention = False
        try:
            out = func(*args, **kwargs)
        finally:
            saved.attention -= 1
        if saved.packed_in_attention:  # autograd keeps this attention's tensors: a fused kernel's q, k, v, out, lse
            for t in (*args[:3], out):
                saved.add(t)
            saved.extra += out.numel() // out.size(-1) * 4  # log-sum-exp, float32
        return out


def _meta_clip_batch(model, builder, s: TrainingSettings):
    """A ClipBatch of one clip with `expressions` expressions: meta images, prompts from the real builder
    (token ids on meta, labels on the CPU where `label_positions` reads them), the 4-D attention mask."""
    from glus.model.glus import ClipBatch

    mllm, seg = model.mllm, model.segmenter
    rng = np.random.default_rng(0)
    items = [builder.build(s.expression, s.num_query, rng) for _ in range(s.expressions)]
    prompts = builder.collate(items, s.num_query)
    E, L = prompts.input_ids.shape
    frames = s.num_context + s.num_query
    clip, sam = mllm.image_size, seg.image_size
    prompts.input_ids = prompts.input_ids.to("meta")
    prompts.seg_positions = prompts.seg_positions.to("meta")
    prompts.attention_mask = _full_mask(E, L, L)
    batch = ClipBatch(_meta(1, frames, 3, clip, clip, dtype=mllm.vision_tower.dtype),
                      _meta(1, s.num_query, 3, sam, sam, dtype=_dtype(seg.sam)), prompts,
                      torch.zeros(E, dtype=torch.long, device="meta"))
    return batch, L


def _scalar(*tensors) -> torch.Tensor:
    return sum(t.float().mean() for t in tensors if t is not None and t.requires_grad)


def training_costs(model, tokenizer=None, num_context: int = 4, num_query: int = 4, expressions: int = 3,
                   gradient_checkpointing: bool = False, expression: str = DEFAULT_EXPRESSION,
                   label_mode: str = "seg", num_frames: int = 6, objects: int = 3) -> dict:
    """FLOPs (forward by part, backward measured) and memory of one training sample: a GLUS clip of
    `num_context` + `num_query` frames with `expressions` expressions, or a VOSModel clip of `num_frames`
    frames with `objects` objects. Runs the real forward and backward on a meta copy of the model."""
    model = as_meta(model)
    is_glus = hasattr(model, "mllm")
    s = TrainingSettings(num_context, num_query, expressions, gradient_checkpointing, expression, label_mode)
    lm = model.mllm.base_lm if is_glus else None
    was_checkpointing = lm is not None and any(getattr(m, "gradient_checkpointing", False) is True
                                               for m in lm.modules())
    if lm is not None and gradient_checkpointing != was_checkpointing:
        _checkpointing(lm, gradient_checkpointing)
    model.train()
    saved = _SavedTensors(model)
    tally = _Tally()
    result: dict = {"kind": "glus" if is_glus else "vos"}
    try:
        with ExitStack() as stack:
            if is_glus:
                builder, own = prompt_builder(model, tokenizer, num_context, label_mode)
                batch, length = _meta_clip_batch(model, builder, s)
                result["settings"] = {**vars(s), "tokens": length,
                                      "tokenizer": "model" if own else "stand-in (tiny BPE)"}
            else:
                batch = _meta_vos_batch(model, num_frames, objects)
                result["settings"] = {"num_frames": num_frames, "objects": objects}
            stack.enter_context(tally.mode)
            with ExitStack() as inner:
                _wrap_model(tally, inner, model)
                inner.enter_context(torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t))
                inner.enter_context(_FusedAttention(saved))
                out = model(batch)
                loss = (_scalar(out.mask_logits, out.lm_logits, out.seg_logits) if is_glus else _scalar(out))
            forward = tally.mode.get_total_flops()
            activations = saved.bytes
            if isinstance(loss, torch.Tensor) and loss.requires_grad:
                loss.backward()
            backward = tally.mode.get_total_flops() - forward
    finally:
        model.zero_grad(set_to_none=True)
        if lm is not None and gradient_checkpointing != was_checkpointing:
            _checkpointing(lm, was_checkpointing)
    parts = {k: v for k, v in tally.parts.items() if v}
    units = expressions if is_glus else objects
    result.update({"forward": parts, "forward_total": forward, "backward_total": backward,
                   "total": forward + backward, "per_unit": (forward + backward) / units,
                   "unit": "expression" if is_glus else "object",
                   "backward_over_forward": backward / forward if forward else 0.0,
                   "memory": memory_costs(model, activations)})
    return result


def _checkpointing(lm, on: bool) -> None:
    """transformers' gradient checkpointing on or off (its newer name first)."""
    name = "activation_checkpointing" if hasattr(lm, "activation_checkpointing_enable") else "gradient_checkpointing"
    getattr(lm, f"{name}_{'enable' if on else 'disable'}")()


def _meta_vos_batch(model, frames: int, objects: int):
    from glus.model.vos import VOSClipBatch

    seg = model.segmenter
    S = seg.image_size
    return VOSClipBatch(_meta(frames, 3, S, S, dtype=_dtype(seg.sam)), _meta(objects, frames, S, S))


def memory_costs(model: nn.Module, activations: int | None = None) -> dict:
    """Parameter bytes by dtype, trainable parameters, their gradients and AdamW states (2 x float32), and
    the measured training activations (see the package docstring)."""
    by_dtype: dict[str, int] = defaultdict(int)
    count, trainable, grad_bytes = 0, 0, 0
    for p in model.parameters():
        by_dtype[str(p.dtype).replace("torch.", "")] += p.numel() * p.element_size()
        count += p.numel()
        if p.requires_grad:
            trainable += p.numel()
            grad_bytes += p.numel() * p.element_size()
    out = {"parameters": count, "parameter_bytes": dict(by_dtype), "trainable": trainable,
           "gradient_bytes": grad_bytes, "adam_bytes": 8 * trainable}
    if activations is not None:
        out["activation_bytes"] = activations
    return out
