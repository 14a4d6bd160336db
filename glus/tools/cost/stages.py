"""The inference stages of one model, counted on the meta device once per shape: `StageCosts` (CLIP, the LLM
with or without a KV cache, the SAM-2 image encoder, the [SEG] projection, decoder + memory passes of GLUS and
of the VOS path) with its per-step helpers, and `prompt_builder`, the model's own PromptBuilder that sets the
token counts."""
from __future__ import annotations

from collections import defaultdict
from contextlib import ExitStack

import torch

from glus.tools.cost.counting import _dtype, _meta, _Tally, _wrap_segmenter, as_meta, count_flops

DEFAULT_EXPRESSION = "the person walking to the left"


def prompt_builder(model, tokenizer=None, num_context: int = 4, label_mode: str = "seg"):
    """(PromptBuilder of the model's template, whether the tokenizer is the model's own). Without a tokenizer
    the tiny one stands in: image slots are exact (the model's tokens per frame), text lengths approximate."""
    from glus.model.mllm import PromptBuilder, build_tiny_tokenizer
    from glus.model.mllm.templates import get_templates
    from glus.model.mllm.tokenizer import build_tiny_qwen_tokenizer

    own = tokenizer is not None
    if not own:  # the tiny tokenizer of the model's conversation format
        chatml = get_templates(model.template).chat == "chatml"
        tokenizer = build_tiny_qwen_tokenizer() if chatml else build_tiny_tokenizer()
    builder = PromptBuilder(tokenizer, tokens_per_frame=model.mllm.tokens_per_frame(),
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
        size = mllm.image_size

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
    """The 4-D boolean attention mask transformers prepares (see the package docstring); counts do not depend
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
