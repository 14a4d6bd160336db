"""FLOPs and memory of GLUS, counted from the real module trees: `glus model cost`.

Nothing here is a typed-in figure. The model's own stage methods run on the meta device (shapes, no values,
no arithmetic) under `torch.utils.flop_counter.FlopCounterMode`, which adds up the FLOPs of every matrix
product, convolution and attention the modules dispatch; token counts come from the model's own
`PromptBuilder` (its template, its tokenizer).

Conventions
- One multiply-add is 2 FLOPs. Only matrix products (mm, bmm, addmm, baddbmm), convolutions and attention are
  counted (FlopCounterMode's set): norms, softmax, activations, interpolation and the losses are left out
  (each is O(elements), a few percent at most).
- Attention counts q k^T and attention x v over every (query, key) pair, masked or not: a causal LLM is counted
  at its full square (a causal FlashAttention kernel skips about half of the attention products).
- On the meta device `scaled_dot_product_attention` decomposes into two bmm, which FlopCounterMode counts; on
  the CPU it runs `_scaled_dot_product_flash_attention_for_cpu`, for which `counter()` adds torch's own SDPA
  formulas, so a model counts the same on either device.
- The LLM's attention mask is given as the 4-D mask transformers would prepare (batch, 1, queries, keys): its
  own 2-D mask handling reads mask values, which the meta device has not. With a KV cache the suffix runs the
  real `MultimodalLM.hidden_states(..., past_key_values=cache)`: its queries are the suffix, its keys prefix +
  suffix, exactly what the streaming engine runs.
- Image features are computed once per frame wherever the inference code does so (the engine, sparse mode's
  gaps); the faithful loop recomputes them per expression and frame, as it does.

Inference figures are per expression-frame, averaged over one forward pass over a video of `frames` frames
with `expressions` expressions, following each mode's loop in `glus.infer`:
- faithful (`FaithfulLoop`): per expression and frame, CLIP on the context + window frames, the whole prompt
  through the LLM, the SAM-2 image encoder, [SEG] projection, decoder + memory (batch 1);
- engine (`StreamingEngine`): per video CLIP on the context frames and the prompt prefix through the LLM (KV
  cache); per frame CLIP and the SAM-2 encoder once, the window's suffix for all expressions over the cached
  prefix, decoder + memory with the expressions as one batch;
- sparse K (`SparseEngine`): the engine on the anchors (positions 0, K, 2K, ... and the last frame), and per
  gap between two anchors the VOS path's image encoder once per frame (anchors included: the VOS encoder is
  its own model) and two propagations (from each anchor: its mask written as a conditioning frame, then the gap
  frames tracked), every expression in one batch;
- vos: the plain VOS path alone, per object-frame (a pass from a given mask; the start frame's encoder
  counted, its mask given).
The first frames of a pass have shorter windows and emptier memories than later ones; `steady` gives the cost of
a frame with a full window and a full memory. Decoder + memory passes are counted step by step with the real
memory state (what a step reads depends on what earlier steps wrote), once per model at batch 1 and 2 (see
`StageCosts._pass`: a step is affine in the batch and a shorter pass is a prefix of a longer one).

Text tokens: the model's tokenizer when there is one (a tiny recipe's; LISA's when its folder is present, or
`--tokenizer`); otherwise the tiny BPE tokenizer stands in and the report says so: image slots stay exact (they
come from the vision tower's patch count and the pooling), the text is spelt in more tokens than LLaMA's
(e.g. 844 tokens for the published prompt with 4 query frames, where LLaMA's tokenizer gives about 690).

Training figures are per training sample: one clip (`num_context` + `num_query` frames of one video) with
`expressions` expressions, as a GLUS micro-batch item. The real `GLUS.forward` runs on meta tensors and a
scalar made of its outputs is back-propagated: the backward FLOPs are counted too, not estimated: autograd
computes weight gradients only for trainable parameters and input gradients only where a trainable part lies
upstream, so a frozen image encoder under no_grad counts once, a frozen LLM with LoRA about 2x forward (input
gradients through every layer, weight gradients only for the adapters), a trained module about 3x. With the
recipe's gradient checkpointing the LLM's layers are recomputed in the backward (counted as run: torch's
non-reentrant checkpoint stops each recomputation once the saved tensors it needs are back, so a layer's last
products are not run again).

Memory: parameters by dtype (the recipe's: the 7B LLM in its `dtype`, SAM-2 float32), gradients of trainable
parameters, AdamW's two float32 states, and training activations measured as the tensors autograd saves for
the backward (`torch.autograd.graph.saved_tensors_hooks`, each storage once, parameters excluded). Attention is
costed as a fused kernel (flash / memory-efficient: q, k, v, output and log-sum-exp kept), not as the meta
device's math path that would keep the (queries x keys) probabilities. Not included: the transient tensors of
the forward and the backward's own working memory (one checkpointed layer's recompute with checkpointing),
DeepSpeed's partitioning (ZeRO-2 splits gradients and optimiser states over the GPUs) and mixed-precision copies.
"""
from __future__ import annotations

import copy
from collections import defaultdict
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from glus.data.samplers import query_window
from glus.infer.sparse import anchor_positions

aten = torch.ops.aten


def _cpu_attention(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_attention_backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None,
                            **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


# CPU attention kernels FlopCounterMode has no formula for: torch's own SDPA formulas (as for the CUDA kernels)
CPU_ATTENTION = {aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention,
                 aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward}

DEFAULT_EXPRESSION = "the person walking to the left"


def counter() -> FlopCounterMode:
    """A FlopCounterMode that also counts the CPU attention kernel (see the module docstring)."""
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


# ---- the stages, counted once per shape ------------------------------------------------------------------

def prompt_builder(model, tokenizer=None, num_context: int = 4, label_mode: str = "seg"):
    """(PromptBuilder of the model's template, whether the tokenizer is the model's own). Without a tokenizer
    the tiny one stands in: image slots are exact (the model's tokens per frame), text lengths approximate."""
    from glus.model.mllm import PromptBuilder, build_tiny_tokenizer

    own = tokenizer is not None
    builder = PromptBuilder(tokenizer or build_tiny_tokenizer(), tokens_per_frame=model.mllm.tokens_per_frame(),
                            num_context=num_context, label_mode=label_mode, template=model.template)
    return builder, own


class StageCosts:
    """FLOPs of one model's inference stages on the meta device, each shape counted once."""

    def __init__(self, model, vos_segmenter=None, pass_length: int = 1):
        self.model = as_meta(model).eval()
        self.vos_segmenter = vos_segmenter if vos_segmenter is not None else self.model.segmenter
        self.pass_length = pass_length  # the longest pass the caller will ask for (see `_pass`)
        self._memo: dict = {}

    def _once(self, key, fn):
        if key not in self._memo:
            self._memo[key] = fn()
        return self._memo[key]

    @torch.no_grad()
    def clip(self, frames: int) -> int:
        """CLIP tower + pooling + projector on `frames` frames: affine in the frame count, so counted on 1 and
        2 frames (n f(1) - (n - 1) (2 f(1) - f(2)); CLIP has no batch-independent product, the second term is 0)."""
        mllm = self.model.mllm
        size = mllm.vision_tower.config.image_size

        def run(n):
            return count_flops(mllm.encode_frames, _meta(n, 3, size, size, dtype=mllm.vision_tower.dtype))[1]
        one, two = self._once(("clip", 1), lambda: run(1)), self._once(("clip", 2), lambda: run(2))
        return frames * one - (frames - 1) * (2 * one - two)

    @torch.no_grad()
    def llm(self, batch: int, tokens: int, past: int = 0) -> int:
        """The decoder on `tokens` new tokens per sequence; with `past` > 0 over a KV cache of `past` tokens
        (a prefix forward of one sequence, repeated per batch row, as the engine builds it; cropped back to
        the prefix after each count, as the engine does)."""
        mllm = self.model.mllm
        dtype, width = _dtype(mllm.language_model), mllm.hidden_size

        def prefix_cache():
            _, cache = mllm.hidden_states(_meta(1, past, width, dtype=dtype), _full_mask(1, past, past),
                                          use_cache=True)
            cache.batch_repeat_interleave(batch)
            return cache

        def run():
            cache = self._once(("cache", batch, past), prefix_cache) if past else None
            try:
                return count_flops(mllm.hidden_states, _meta(batch, tokens, width, dtype=dtype),
                                   _full_mask(batch, tokens, past + tokens), past_key_values=cache,
                                   use_cache=cache is not None)[1]
            finally:
                if cache is not None:
                    cache.crop(past - cache.get_seq_length())  # as the engine: drop the suffix's keys
        return self._once(("llm", batch, tokens, past), run)

    def _image(self, segmenter):
        size = segmenter.image_size
        return _meta(1, 3, size, size, dtype=_dtype(segmenter.sam))

    @torch.no_grad()
    def sam_encoder(self, frames: int = 1, vos: bool = False) -> int:
        """The segmenter's image encoder (+ the decoder's high-resolution projections), per `frames` frames."""
        seg = self.vos_segmenter if vos else self.model.segmenter
        return frames * self._once(("sam_encoder", vos), lambda: count_flops(seg.encode_image, self._image(seg))[1])

    @torch.no_grad()
    def seg_projection(self, batch: int) -> int:
        mllm = self.model.mllm
        return self._once(("seg", batch), lambda: count_flops(
            self.model.seg_prompts, _meta(batch, mllm.hidden_size, dtype=_dtype(mllm.language_model)))[1])

    def glus_pass(self, frames: int, batch: int) -> dict[str, list[float]]:
        """Decoder + memory over one pass of `frames` frames prompted by [SEG] tokens, batch `batch`:
        {part: [FLOPs at each frame]} for decode, memory_read, memory_write (see `_pass`)."""
        def step_fn(seg, batch_):
            feats = seg.encode_image(self._image(seg)).expand(batch_)
            prompt = _meta(batch_, 1, seg.sam.sam_prompt_embed_dim, dtype=_dtype(seg.sam))

            def start(frames_):
                state = seg.reset(num_frames=frames_)
                return lambda t: seg.step(state, t, feats, sparse_BNC=prompt)
            return start
        return self._pass("glus", self.model.segmenter, step_fn, frames, batch)

    def vos_pass(self, frames: int, batch: int) -> dict[str, list[float]]:
        """The VOS path over one pass of `frames` frames from a given mask (frame 0: the mask written as a
        conditioning frame; then each frame tracked without prompt): {part: [FLOPs at each frame]}."""
        def step_fn(seg, batch_):
            vos = _vos_view(seg)
            feats = seg.encode_image(self._image(seg))
            masks = _meta(batch_, seg.image_size, seg.image_size)

            def start(frames_):
                state = seg.reset(num_frames=frames_)
                return lambda t: (vos.start(state, t, feats, masks) if t == 0 else vos.track(state, t, feats, batch_))
            return start
        return self._pass("vos", self.vos_segmenter, step_fn, frames, batch)

    @torch.no_grad()
    def _pass(self, kind: str, seg, step_fn, frames: int, batch: int) -> dict[str, list[float]]:
        """A pass' per-frame FLOPs, counted once at batch 1 over the longest pass (`self.pass_length`): a
        shorter pass is its prefix (a memory's steps do not depend on where the pass ends; SAM-2's object
        pointers do, through their horizon: such passes are counted at their own length). Steps are affine in
        the batch, B x f(1) - (B - 1) x c, with c the batch-independent part (the decoder's image positional
        encoding) found as 2 f(1) - f(2) on the first two steps (the first step's for the first step, the
        second's for the others)."""
        length = frames if _length_dependent(seg.memory) else max(frames, self.pass_length)
        base = self._once((kind, length), lambda: _per_step(seg, length, step_fn(seg, 1)(length)))
        two = self._once((kind, "batch2"), lambda: _per_step(seg, 2, step_fn(seg, 2)(length)))
        out = {}
        for part, values in base.items():
            fixed = [2 * one - b2 for one, b2 in zip(values[:2], two[part])]
            out[part] = [batch * v - (batch - 1) * fixed[min(t, 1)] for t, v in enumerate(values[:frames])]
        return out


def _length_dependent(memory) -> bool:
    return bool(getattr(memory, "object_pointers", False))


def _full_mask(batch: int, queries: int, keys: int) -> torch.Tensor:
    """The 4-D boolean attention mask transformers prepares (see the module docstring); counts do not depend
    on its values."""
    return torch.ones(1, 1, 1, 1, dtype=torch.bool, device="meta").expand(batch, 1, queries, keys)


def _per_step(segmenter, frames: int, step) -> dict[str, list[int]]:
    """{part: [FLOPs of step(t) for t < frames]} for decode (+ prompt: what runs outside the segmenter),
    memory_read and memory_write."""
    out: dict[str, list[int]] = defaultdict(list)
    with ExitStack() as stack:
        tally = _Tally()
        stack.enter_context(tally.mode)
        _wrap_segmenter(tally, stack, segmenter, "")
        for t in range(frames):
            before = dict(tally.parts)
            with tally.part("prompt"):  # what a step runs outside the segmenter (VOS: the no-prompt token)
                step(t)
            for name in ("decode", "memory_read", "memory_write", "prompt"):
                out[name].append(tally.parts.get(name, 0) - before.get(name, 0))
    return dict(out)


def _vos_view(segmenter):
    """A VOSModel around `segmenter`, for its start/track steps, leaving every trainable flag as it was
    (VOSModel freezes the memory's empty-read parameters)."""
    from glus.model.vos import VOSModel

    flags = [(p, p.requires_grad) for p in segmenter.parameters()]
    vos = VOSModel(segmenter)
    for p, flag in flags:
        p.requires_grad_(flag)
    return vos


# ---- inference -------------------------------------------------------------------------------------------

GLUS_PARTS = ("clip", "llm", "sam_encoder", "seg_projection", "memory_read", "decode", "memory_write")
VOS_PARTS = ("vos_encoder", "vos_memory_read", "vos_decode", "vos_memory_write")


@dataclass
class InferenceSettings:
    frames: int = 32             # frames of the video (one forward pass)
    expressions: int = 8         # expressions of the video (the engine batches them)
    num_context: int = 4         # context frames of the prompt
    window: int = 4              # query frames per window (stride 1)
    every: tuple = (4, 8, 16)    # sparse mode's K
    expression: str = DEFAULT_EXPRESSION  # the text every expression is given (it sets the text tokens)


def token_counts(builder, window: int, expression: str = DEFAULT_EXPRESSION) -> dict:
    """Prompt lengths from the real PromptBuilder: the whole inference prompt (faithful loop) and the engine's
    prefix / suffix split, for each window length 1..window."""
    full, suffix = {}, {}
    prefix = None
    for w in range(1, window + 1):
        full[w] = len(builder.build(expression, w)["input_ids"])
        pre, suf = builder.split_for_cache(expression, w)
        prefix, suffix[w] = len(pre), len(suf)
    image = len(builder._image())
    return {"prefix": prefix, "suffix": suffix, "full": full, "image_per_frame": image,
            "visual_per_frame": builder.k}


def _zero() -> dict[str, float]:
    return defaultdict(float)


def _add_pass(total: dict, pass_parts: dict, scale: float = 1.0, prefix: str = "") -> None:
    total[prefix + "decode"] += scale * sum(pass_parts["decode"]) + scale * sum(pass_parts.get("prompt", []))
    total[prefix + "memory_read"] += scale * sum(pass_parts["memory_read"])
    total[prefix + "memory_write"] += scale * sum(pass_parts["memory_write"])


def _faithful(stages: StageCosts, s: InferenceSettings, tokens: dict) -> dict:
    total = _zero()
    order = list(range(s.frames))
    for i in order:
        w = len(query_window(order, i, s.window))
        total["clip"] += s.expressions * stages.clip(s.num_context + w)
        total["llm"] += s.expressions * stages.llm(1, tokens["full"][w])
        total["sam_encoder"] += s.expressions * stages.sam_encoder()
        total["seg_projection"] += s.expressions * stages.seg_projection(1)
    _add_pass(total, stages.glus_pass(s.frames, 1), s.expressions)
    return total


def _engine(stages: StageCosts, s: InferenceSettings, tokens: dict, frames: int | None = None) -> dict:
    frames = s.frames if frames is None else frames
    total = _zero()
    total["clip"] += stages.clip(s.num_context)            # open(): the context frames, once per video
    total["llm"] += stages.llm(1, tokens["prefix"])        # open(): the prefix's KV cache, once per video
    order = list(range(frames))
    for i in order:
        w = len(query_window(order, i, s.window))
        total["clip"] += stages.clip(1)
        total["llm"] += stages.llm(s.expressions, tokens["suffix"][w], tokens["prefix"])
        total["sam_encoder"] += stages.sam_encoder()
        total["seg_projection"] += stages.seg_projection(s.expressions)
    _add_pass(total, stages.glus_pass(frames, s.expressions))
    return total


def _sparse(stages: StageCosts, s: InferenceSettings, tokens: dict, every: int) -> dict:
    anchors = anchor_positions(s.frames, every)
    total = _engine(stages, s, tokens, frames=len(anchors))  # GLUS sees the anchors only
    for a, b in zip(anchors, anchors[1:]):
        gap = b - a - 1
        if gap < 1:
            continue
        total["vos_encoder"] += stages.sam_encoder(gap + 2, vos=True)  # a..b, shared by both directions
        _add_pass(total, stages.vos_pass(gap + 1, s.expressions), 2.0, prefix="vos_")  # from a, and from b
    return total


def _vos_alone(stages: StageCosts, frames: int) -> dict:
    total = _zero()
    total["vos_encoder"] += stages.sam_encoder(frames, vos=True)
    _add_pass(total, stages.vos_pass(frames, 1), prefix="vos_")
    return total


def _finish(total: dict, units: int) -> dict:
    out = {k: v / units for k, v in total.items() if v}
    out["total"] = sum(out.values())
    return out


def inference_costs(model, tokenizer=None, frames: int = 32, expressions: int = 8, every=(4, 8, 16),
                    num_context: int = 4, window: int = 4, expression: str = DEFAULT_EXPRESSION,
                    vos=None) -> dict:
    """FLOPs per expression-frame of GLUS inference (faithful loop, engine, sparse mode for each K in `every`,
    the VOS path alone), and the unit costs they are made of. `model`: a GLUS (or a VOSModel: the VOS path
    only), on any device (counted on a meta copy); `vos`: the VOSModel of sparse mode's gaps (default: the
    model's own segmenter and memory)."""
    settings = InferenceSettings(frames, expressions, num_context, window, tuple(every), expression)
    vos_seg = as_meta(vos).segmenter if vos is not None else None
    stages = StageCosts(model, vos_seg, pass_length=frames)
    result = {"kind": "glus" if hasattr(stages.model, "mllm") else "vos", "settings": vars(settings).copy()}
    vos_path = _vos_alone(stages, frames)
    steady_vos = stages.vos_pass(frames, 1)
    if result["kind"] == "vos":
        result["modes"] = {"vos": _finish(vos_path, frames)}
        result["steady"] = {"vos": _finish({"vos_encoder": stages.sam_encoder(vos=True),
                                            **_last(steady_vos, "vos_")}, 1)}
        result["parts"] = _vos_units(stages, frames)
        return result
    builder, own = prompt_builder(stages.model, tokenizer, num_context)
    tokens = token_counts(builder, window, expression)
    result["tokens"] = {**tokens, "tokenizer": "model" if own else "stand-in (tiny BPE)"}
    modes = {"faithful": _finish(_faithful(stages, settings, tokens), frames * expressions),
             "engine": _finish(_engine(stages, settings, tokens), frames * expressions)}
    for k in every:
        modes[f"sparse K={k}"] = _finish(_sparse(stages, settings, tokens, k), frames * expressions)
    modes["vos"] = _finish(vos_path, frames)
    result["modes"] = modes
    result["steady"] = _steady(stages, settings, tokens, steady_vos)
    result["parts"] = {**_glus_units(stages, settings, tokens), **_vos_units(stages, frames)}
    return result


def _last(pass_parts: dict, prefix: str = "") -> dict:
    return {prefix + "decode": pass_parts["decode"][-1] + pass_parts.get("prompt", [0])[-1],
            prefix + "memory_read": pass_parts["memory_read"][-1],
            prefix + "memory_write": pass_parts["memory_write"][-1]}


def _steady(stages: StageCosts, s: InferenceSettings, tokens: dict, vos_pass: dict) -> dict:
    """A frame with a full window and the pass' last memory (per expression-frame)."""
    w, E = s.window, s.expressions
    one = stages.glus_pass(s.frames, 1)
    faithful = {"clip": stages.clip(s.num_context + w), "llm": stages.llm(1, tokens["full"][w]),
                "sam_encoder": stages.sam_encoder(), "seg_projection": stages.seg_projection(1), **_last(one)}
    batch = {k: v / E for k, v in _last(stages.glus_pass(s.frames, E)).items()}
    engine = {"clip": stages.clip(1) / E, "llm": stages.llm(E, tokens["suffix"][w], tokens["prefix"]) / E,
              "sam_encoder": stages.sam_encoder() / E, "seg_projection": stages.seg_projection(E) / E, **batch}
    vos = {"vos_encoder": stages.sam_encoder(vos=True), **_last(vos_pass, "vos_")}
    return {"faithful": _finish(faithful, 1), "engine": _finish(engine, 1), "vos": _finish(vos, 1)}


def _glus_units(stages: StageCosts, s: InferenceSettings, tokens: dict) -> dict:
    w, P = s.window, tokens["prefix"]
    one = stages.glus_pass(s.frames, 1)
    return {
        "CLIP tower + projector, 1 frame": stages.clip(1),
        f"LLM, whole prompt ({tokens['full'][w]} tokens, window {w})": stages.llm(1, tokens["full"][w]),
        f"LLM, prefix ({P} tokens, once per video)": stages.llm(1, P),
        f"LLM, suffix ({tokens['suffix'][w]} tokens over a {P}-token KV cache)": stages.llm(1, tokens["suffix"][w], P),
        "SAM-2 image encoder, 1 frame": stages.sam_encoder(),
        "[SEG] projection, 1 prompt": stages.seg_projection(1),
        "mask decoder, 1 prompt": one["decode"][-1],
        f"memory read, 1 object-frame (pass mean over {s.frames} frames)": _mean(one["memory_read"]),
        "memory read, 1 object-frame (full memory)": one["memory_read"][-1],
        f"memory write, 1 object-frame (pass mean)": _mean(one["memory_write"]),
    }


def _vos_units(stages: StageCosts, frames: int) -> dict:
    p = stages.vos_pass(frames, 1)
    tracked = [d + q for d, q in zip(p["decode"][1:], p["prompt"][1:])] or [0]
    return {
        "VOS path: image encoder, 1 frame": stages.sam_encoder(vos=True),
        "VOS path: given mask (start frame), 1 object": p["decode"][0] + p["prompt"][0] + p["memory_write"][0],
        "VOS path: decoder (no prompt), 1 object-frame": tracked[-1],
        f"VOS path: memory read, 1 object-frame (pass mean over {frames} frames)": _mean(p["memory_read"][1:] or [0]),
        "VOS path: memory read, 1 object-frame (full memory)": p["memory_read"][-1],
        "VOS path: memory write, 1 object-frame": p["memory_write"][-1],
    }


def _mean(values) -> float:
    return sum(values) / max(len(values), 1)


# ---- training --------------------------------------------------------------------------------------------

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
    clip, sam = mllm.vision_tower.config.image_size, seg.image_size
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
    the measured training activations (see the module docstring)."""
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


# ---- recipes ---------------------------------------------------------------------------------------------

def model_from_recipe(path: str):
    """(model on the meta device, tokenizer or None, training settings) from a recipe file. LISA-based recipes
    are built with LISA-7B-v1's shapes and no checkpoint (`LisaGLUSBuilder.build_on_meta`); other builders
    build as usual (a SAM-2 checkpoint is not read: weights do not change costs), then move to meta."""
    import yaml

    from glus.errors import GlusError
    from glus.model.factory import LisaGLUSBuilder
    from glus.model.load import instantiate
    from glus.model.vos import VOSBuilder

    recipe = yaml.safe_load(open(path))
    try:
        init = recipe["model"]["init_args"]
        spec = init["builder"]
    except (KeyError, TypeError):
        raise GlusError(f"{path}: no model.init_args.builder: not a training recipe") from None
    builder = instantiate(spec)
    clip = (recipe.get("data") or {}).get("init_args", {}).get("clip") or {}
    train = {"num_context": init.get("num_context", 4), "num_query": init.get("num_query", 4),
             "expressions": clip.get("max_expressions", 3),
             "gradient_checkpointing": bool(init.get("gradient_checkpointing", False)),
             "label_mode": init.get("label_mode", "seg"),
             "num_frames": clip.get("num_frames", 6), "objects": clip.get("max_objects", 3)}
    if isinstance(builder, LisaGLUSBuilder):
        model, tokenizer = builder.build_on_meta()
        return model, tokenizer, train
    if isinstance(builder, VOSBuilder):
        builder.sam_checkpoint = None
    if not hasattr(builder, "build") or "Selector" in type(builder).__name__:
        raise GlusError(f"{path}: builder {spec.get('class_path')} is not a GLUS or VOS model: "
                        "glus model cost counts GLUS and plain VOS recipes")
    model, tokenizer = builder.build()
    return model.to("meta"), tokenizer, train


def preset_model(name: str, memory: dict | None = None):
    """(model on meta, tokenizer or None, training settings) of a preset: glus-7b (the published GLUS-S) or tiny."""
    from glus.model.factory import glus_7b_on_meta, tiny_glus

    train = {"num_context": 4, "num_query": 4, "expressions": 3, "gradient_checkpointing": False,
             "label_mode": "seg"}
    if name == "glus-7b":
        train["gradient_checkpointing"] = True
        return glus_7b_on_meta(memory=memory, dtype=torch.bfloat16), None, train
    model, tokenizer = tiny_glus()
    return model.to("meta"), tokenizer, train


# ---- report ----------------------------------------------------------------------------------------------

def _unit(values) -> tuple[float, str]:
    top = max([abs(v) for v in values] + [1.0])
    return (1e12, "TFLOP") if top >= 1e11 else (1e9, "GFLOP") if top >= 1e8 else (1e6, "MFLOP")


def _fmt(v: float, scale: float) -> str:
    x = v / scale
    return f"{x:.3f}" if abs(x) < 10 else f"{x:.2f}" if abs(x) < 1000 else f"{x:,.0f}"


def _cell(mode: dict, keys, scale: float) -> str:
    value = sum(mode.get(k, 0.0) for k in keys)
    return _fmt(value, scale) if value else "-"


def _bytes(n: float) -> str:
    for unit, size in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


COLUMNS = (("CLIP", ("clip",)), ("LLM", ("llm",)), ("SAM-2 encoder", ("sam_encoder",)),
           ("decoder + [SEG] proj.", ("decode", "seg_projection")), ("memory", ("memory_read", "memory_write")),
           ("VOS path", VOS_PARTS))


def format_costs(costs: dict) -> str:
    """Markdown tables of `{"inference": inference_costs(...), "training": training_costs(...)}` (either may
    be absent), with the settings they were counted with."""
    lines: list[str] = []
    inf, tr = costs.get("inference"), costs.get("training")
    if costs.get("model"):
        lines += [f"model: {costs['model']}", ""]
    if inf:
        s = inf["settings"]
        scale, unit = _unit([m["total"] for m in inf["modes"].values()])
        lines.append(f"## Inference, {unit} per {'expression' if inf['kind'] == 'glus' else 'object'}-frame")
        lines.append("")
        if inf["kind"] == "glus":
            t = inf["tokens"]
            w = s["window"]
            lines.append(f"settings: video of {s['frames']} frames, {s['expressions']} expressions (batched by the "
                         f"engine), {s['num_context']} context frames, window {w}; expression {s['expression']!r}")
            lines.append(f"tokens ({t['tokenizer']} tokenizer): {t['image_per_frame']} per image "
                         f"({t['visual_per_frame']} visual); whole prompt {t['full'][w]}; prefix {t['prefix']} + "
                         f"suffix {t['suffix'][w]} (window {w})")
            lines.append("")
        glus = inf["kind"] == "glus"
        cols = [(name, keys) for name, keys in COLUMNS if any(k in m for m in inf["modes"].values() for k in keys)]
        lines.append("| mode | " + " | ".join(n for n, _ in cols) + " | total |" + (" vs faithful |" if glus else ""))
        lines.append("|---" * (len(cols) + 2 + glus) + "|")
        for rows, suffix in ((inf["modes"], ""), (inf.get("steady", {}), ", steady frame")):
            for name, m in rows.items():
                cells = [_cell(m, keys, scale) for _, keys in cols]
                rel = f" {m['total'] / rows['faithful']['total']:.3f} |" if glus else ""
                lines.append(f"| {name}{suffix} | " + " | ".join(cells) + f" | {_fmt(m['total'], scale)} |{rel}")
        lines.append("")
        if glus:
            lines.append("steady frame: a frame with a full window and the pass' last memory. sparse K: GLUS on every "
                         "K-th frame (and the last), the VOS path both ways between anchors.")
        else:
            lines.append(f"the VOS path from a given mask over {s['frames']} frames; steady frame: the pass' last.")
        lines.append("")
        pscale, punit = _unit(inf["parts"].values())
        lines.append(f"| unit cost | {punit} |")
        lines.append("|---|---|")
        for name, v in inf["parts"].items():
            lines.append(f"| {name} | {_fmt(v, pscale)} |")
        lines.append("")
    if tr:
        s = tr["settings"]
        scale, unit = _unit([tr["total"]])
        if tr["kind"] == "glus":
            what = (f"1 clip ({s['num_context']} context + {s['num_query']} query frames, {s['expressions']} "
                    f"expressions, {s['tokens']} tokens per prompt, {s['tokenizer']} tokenizer), gradient "
                    f"checkpointing {'on' if s['gradient_checkpointing'] else 'off'}")
        else:
            what = f"1 clip ({s['num_frames']} frames, {s['objects']} objects)"
        lines.append(f"## Training, {unit} per sample: {what}")
        lines.append("")
        lines.append(f"| part | forward {unit} |")
        lines.append("|---|---|")
        for name, v in tr["forward"].items():
            lines.append(f"| {name} | {_fmt(v, scale)} |")
        lines.append(f"| **forward** | {_fmt(tr['forward_total'], scale)} |")
        lines.append(f"| **backward** (counted) | {_fmt(tr['backward_total'], scale)} |")
        lines.append(f"| **forward + backward** | {_fmt(tr['total'], scale)} |")
        lines.append(f"| per {tr['unit']} | {_fmt(tr['per_unit'], scale)} |")
        lines.append("")
        lines.append(f"backward / forward = {tr['backward_over_forward']:.2f} (the 3x rule would say 2.00 for a "
                     "fully trained model; frozen parts and no_grad encoders bring it down, recomputation up)")
        lines.append("")
        mem = tr["memory"]
        lines.append("| memory | bytes |")
        lines.append("|---|---|")
        for dtype, n in mem["parameter_bytes"].items():
            lines.append(f"| parameters, {dtype} | {_bytes(n)} |")
        lines.append(f"| parameters, all ({mem['parameters']:,}) | {_bytes(sum(mem['parameter_bytes'].values()))} |")
        lines.append(f"| gradients ({mem['trainable']:,} trainable) | {_bytes(mem['gradient_bytes'])} |")
        lines.append(f"| AdamW states (2 x float32) | {_bytes(mem['adam_bytes'])} |")
        if "activation_bytes" in mem:
            lines.append(f"| activations saved for backward, 1 sample | {_bytes(mem['activation_bytes'])} |")
        lines.append("")
    return "\n".join(lines)


def describe(model) -> str:
    """One line: the shapes the figures are counted at."""
    parts = []
    if hasattr(model, "mllm"):
        v, lm = model.mllm.vision_tower.config, model.mllm.lm_config
        parts.append(f"CLIP {v.num_hidden_layers} layers x {v.hidden_size} at {v.image_size} px "
                     f"({model.mllm.tokens_per_frame()} tokens per frame)")
        parts.append(f"LLM {lm.num_hidden_layers} layers x {lm.hidden_size}, vocabulary {lm.vocab_size}, "
                     f"{str(_dtype(model.mllm.language_model)).replace('torch.', '')}")
    seg = model.segmenter
    parts.append(f"SAM-2 {sum(p.numel() for p in seg.sam.image_encoder.parameters()) / 1e6:.3g}M-parameter "
                 f"encoder at {seg.image_size} px")
    memory = seg.memory
    n = getattr(memory, "num_memories", None)
    parts.append(f"memory {type(memory).__name__}" + (f" ({n} memories)" if n else ""))
    return "; ".join(parts)


def model_costs(model, tokenizer=None, train: dict | None = None, frames: int = 32, expressions: int = 8,
                every=(4, 8, 16), window: int = 4, expression: str = DEFAULT_EXPRESSION, vos=None,
                training: bool = True) -> dict:
    """Both reports for one model: {"inference": ..., "training": ...}; `train` holds `training_costs`'s
    settings (as `model_from_recipe` reads them from a recipe)."""
    train = dict(train or {})
    out = {"inference": inference_costs(model, tokenizer, frames=frames, expressions=expressions, every=every,
                                        num_context=train.get("num_context", 4), window=window,
                                        expression=expression, vos=vos)}
    if training:
        keys = ("num_context", "num_query", "expressions", "gradient_checkpointing", "label_mode", "num_frames",
                "objects")
        out["training"] = training_costs(model, tokenizer, expression=expression,
                                         **{k: train[k] for k in keys if k in train})
    return out
