"""GLUS inference over whole videos: the sliding window of query frames (size 4, stride 1) with the SAM-2 memory
bank (stride 3, 7 memories), context frames at the centres of 4 equal segments.

Frame t is segmented from the [SEG] of the newest round of the window (t-3, t-2, t-1, t); the first frames
repeat frame 0 to fill the window (as training repeats frames of short videos). Its mask is written to the
expression's memory, which spans the whole video.

Two implementations of the same computation:
- `StreamingEngine` (the default): frames are read one at a time; CLIP and SAM-2 features are computed once
  per frame and shared by every expression of the video; the prompt prefix (system text, context frames,
  context line) does not depend on the expression, so its KV cache is computed once per video and reused by
  every window of every expression; the answer is forced, so one forward over the query rounds gives the
  [SEG] state (no generate loop); expressions are batched.
- `FaithfulLoop`: the published loop, for each expression and each frame: re-encode the 8 frames with CLIP,
  run the whole prompt, re-run the SAM-2 image encoder. It is the reference the engine is tested against.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from glus.data.clips import load_frames
from glus.data.samplers import inference_context_frames
from glus.model.mllm import PromptBuilder
from glus.model.mllm.prompt import pad_right


@dataclass
class FrameResult:
    expressions: list[int]   # indices into the texts given to `run`
    frame: int
    logits: torch.Tensor     # (n, S, S) float32 mask logits at the SAM-2 input size

    def masks_at(self, model, height: int, width: int) -> torch.Tensor:
        """bool (n, H, W) at the original frame size (threshold 0, as training's validation)."""
        return model.logits_at_size(self.logits[:, None], height, width)[:, 0] > 0


def window_frames(t: int, size: int) -> list[int]:
    """Query frames of the window that ends at frame t: [t-size+1 .. t], frame 0 repeated before the start."""
    return [max(0, t - size + 1 + i) for i in range(size)]


class _Base:
    def __init__(self, model, tokenizer, num_context: int = 4, window: int = 4):
        self.model, self.num_context, self.window = model.eval(), num_context, window
        self.prompts = PromptBuilder(tokenizer, tokens_per_frame=model.mllm.tokens_per_frame(),
                                     num_context=num_context)
        ref = model.text_hidden_fcs[0][0].weight
        self.device, self.dtype = ref.device, ref.dtype

    def _clip_tokens(self, frames_THWC) -> torch.Tensor:
        mllm = self.model.mllm
        return mllm.encode_frames(mllm.preprocess(frames_THWC))

    def _sam_features(self, frame_HWC):
        seg = self.model.segmenter
        return seg.encode_image(seg.preprocess(frame_HWC[None]).to(self.device, self.dtype))

    def _prompt(self, seg_hidden_ED: torch.Tensor) -> torch.Tensor:
        fcs = self.model.text_hidden_fcs[0]
        return fcs(seg_hidden_ED.to(fcs[0].weight.dtype))[:, None]

    def _decode(self, state, t: int, feats, prompt_E1C: torch.Tensor) -> torch.Tensor:
        out = self.model.segmenter.step(state, t, feats, sparse_BNC=prompt_E1C)
        return out.high_res_logits[:, 0].float()


class StreamingEngine(_Base):
    @torch.no_grad()
    def run(self, video, texts: list[str]) -> Iterator[FrameResult]:
        """One FrameResult per frame, in order, for all `texts` at once (expressions of `video`)."""
        n, E, mllm = len(video.frames), len(texts), self.model.mllm
        ctx = inference_context_frames(n, self.num_context)
        cache, prefix_len = self._prefix_cache(video, ctx, texts[0], E)
        suffix_ids, suffix_mask, last = self._suffixes(texts)
        prefix_mask = torch.ones(E, prefix_len, dtype=suffix_mask.dtype, device=self.device)
        attention = torch.cat([prefix_mask, suffix_mask], 1)
        rows = torch.arange(E, device=self.device)
        state = self.model.segmenter.reset(num_frames=n)
        recent: dict[int, torch.Tensor] = {}  # CLIP tokens of the frames the window still needs
        for t in range(n):
            frame = load_frames(video, [t])[0]
            recent[t] = self._clip_tokens(frame[None])[0]
            frames = window_frames(t, self.window)
            recent = {i: v for i, v in recent.items() if i >= frames[0]}
            visual = torch.stack([recent[i] for i in frames])[None].expand(E, -1, -1, -1)
            embeds = mllm.embed(suffix_ids, visual)
            hidden, _ = mllm.hidden_states(embeds, attention, past_key_values=cache, use_cache=True)
            cache.crop(prefix_len - cache.get_seq_length())  # drop this window's keys: the next reuses the prefix
            prompt = self._prompt(hidden[rows, last])
            feats = self._sam_features(frame).expand(E)
            yield FrameResult(list(range(E)), t, self._decode(state, t, feats, prompt))

    def _prefix_cache(self, video, ctx: list[int], any_text: str, batch: int):
        mllm = self.model.mllm
        prefix, _ = self.prompts.split_for_cache(any_text, self.window)
        ids = torch.tensor([prefix], device=self.device)
        visual = self._clip_tokens(load_frames(video, ctx))[None]
        _, cache = mllm.hidden_states(mllm.embed(ids, visual), torch.ones_like(ids), use_cache=True)
        cache.batch_repeat_interleave(batch)
        return cache, len(prefix)

    def _suffixes(self, texts: list[str]):
        parts = [self.prompts.split_for_cache(t, self.window)[1] for t in texts]
        ids, mask = pad_right(parts, self.prompts.tok.pad_token_id)
        last = torch.tensor([len(p) - 1 for p in parts], device=self.device)
        return ids.to(self.device), mask.to(self.device), last


class FaithfulLoop(_Base):
    @torch.no_grad()
    def run(self, video, texts: list[str]) -> Iterator[FrameResult]:
        """The published loop: expression by expression, frame by frame, everything recomputed."""
        n, mllm = len(video.frames), self.model.mllm
        ctx = inference_context_frames(n, self.num_context)
        for e, text in enumerate(texts):
            prompt = self.prompts.collate([self.prompts.build(text, self.window)], self.window)
            ids, mask = prompt.input_ids.to(self.device), prompt.attention_mask.to(self.device)
            seg_pos = int(prompt.seg_positions[0, -1])
            state = self.model.segmenter.reset(num_frames=n)
            for t in range(n):
                frames = load_frames(video, ctx + window_frames(t, self.window))
                visual = self._clip_tokens(frames)[None]
                hidden, _ = mllm.hidden_states(mllm.embed(ids, visual), mask)
                feats = self._sam_features(frames[-1])
                yield FrameResult([e], t, self._decode(state, t, feats, self._prompt(hidden[:, seg_pos - 1])))


ENGINES = {"engine": StreamingEngine, "faithful": FaithfulLoop}
