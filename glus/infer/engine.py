"""GLUS inference over whole videos, as published: context frames near the centres of 4 equal segments, a
window of query frames that grows ([0], [0,1], [0,1,2]) and then slides (size 4, stride 1), the newest round's
[SEG] prompting the decoder, and a SAM-2 memory bank that spans the pass (stride 3, 7 memories).

Inference state is explicit: `open(video, texts)` returns a `VideoState` (the video, its context frames, the
expressions, and for the engine the context prefix's KV cache, computed once per video), and
`propagate(state, start, reverse)` runs one pass from any start frame, forward to the last frame or backward to
the first, with a fresh memory per expression; the start frame is the pass' first query frame. A pass mirrors
the published loop over the frame list it is given: backwards, the "previous" frames of a window are the later
frames of the video. `run(video, texts)` is the forward pass from frame 0.

Two implementations of the same computation:
- `StreamingEngine` (the default): frames are read one at a time; CLIP and SAM-2 features are computed once
  per frame and shared by every expression of the video; the prompt prefix (system text, context frames,
  context line) does not depend on the expression, so its KV cache is computed once per video and reused by
  every window of every expression; the answer is forced, so one forward over the query rounds gives the
  [SEG] state (no generate loop); expressions are batched.
- `FaithfulLoop`: the published loop, for each expression and each frame: re-encode the frames of the
  prompt with CLIP, run the whole prompt, re-run the SAM-2 image encoder. It is the reference the engine is
  tested against.
What differs from the published loop: it generates one token after the answer prefix and writes an empty mask
when that token is not [SEG]; here the [SEG] state is always read (the answer is forced).
Masks are the decoder's low-resolution logits upsampled once to the frame size (the published
`postprocess_masks`); the memory receives them at the SAM-2 input size, as published.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from glus.data.frames import load_frames
from glus.data.samplers import inference_context_frames, query_window
from glus.model.mllm import PromptBuilder
from glus.model.mllm.prompt import pad_right


@dataclass
class FrameResult:
    expressions: list[int]   # indices into the texts given to `open`
    frame: int
    logits: torch.Tensor     # (n, h, w) float32 low-resolution mask logits (a quarter of the SAM-2 input size)

    def masks_at(self, model, height: int, width: int) -> torch.Tensor:
        """bool (n, H, W) at the original frame size, upsampled once (threshold 0, as the published code)."""
        return model.logits_at_size(self.logits[:, None], height, width)[:, 0] > 0


@dataclass
class VideoState:
    """What one video's inference keeps between passes."""

    video: object
    texts: list[str]
    context: list[int]                         # the context frames, fixed for the video
    # engine: KV cache of the shared prompt prefix, one copy per expression; each window appends to it and is
    # cropped off again, so the passes over one state run one after the other, never interleaved
    prefix_cache: object = None
    prefix_len: int = 0
    suffixes: dict = field(default_factory=dict)  # engine: window length -> (ids, mask, index of the [SEG] row)
    context_tokens: object = None  # engine: the context frames' CLIP tokens before any video projector (C, K, D)

    @property
    def num_frames(self) -> int:
        return len(self.video.frames)


def to_device(frames: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 frames onto the device, where they are resized (at 4K a host resize costs more than the encoders). On
    CUDA through pinned memory without blocking: the host does not wait for the device's queued work."""
    x = torch.as_tensor(frames)
    if device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def pass_frames(num_frames: int, start: int, reverse: bool) -> list[int]:
    """The frames of one pass, in the order they are segmented."""
    if not 0 <= start < num_frames:
        raise ValueError(f"start frame {start} is outside the video's {num_frames} frames")
    return list(range(start, -1, -1)) if reverse else list(range(start, num_frames))


class _Base(ABC):
    def __init__(self, model, tokenizer, num_context: int = 4, window: int = 4):
        self.model, self.num_context, self.window = model.eval(), num_context, window
        self.prompts = PromptBuilder(tokenizer, tokens_per_frame=model.mllm.tokens_per_frame(),
                                     num_context=num_context, template=model.template)
        ref = model.text_hidden_fcs[0][0].weight
        self.device, self.dtype = ref.device, ref.dtype

    def open(self, video, texts: list[str]) -> VideoState:
        return VideoState(video, list(texts), inference_context_frames(len(video.frames), self.num_context))

    def run(self, video, texts: list[str]) -> Iterator[FrameResult]:
        """Every frame, in order, for all `texts` (expressions of `video`): the forward pass from frame 0."""
        return self.propagate(self.open(video, texts), start=0)

    @abstractmethod
    def propagate(self, state: VideoState, start: int = 0, reverse: bool = False) -> Iterator[FrameResult]:
        """One pass from `start`, forward to the last frame or backward to the first: a FrameResult per frame."""

    def _clip_tokens(self, frames_THWC) -> torch.Tensor:
        mllm = self.model.mllm
        return mllm.encode_frames(mllm.preprocess(to_device(frames_THWC, self.device)))

    def _sam_features(self, frame_HWC):
        seg = self.model.segmenter
        return seg.encode_image(seg.preprocess(to_device(frame_HWC, self.device)[None]))  # in its own dtype

    def _prompt(self, seg_hidden_ED: torch.Tensor, hidden_ELD: torch.Tensor, ids_EL: torch.Tensor):
        """The decoder's prompts for the newest frame: the sparse [SEG] prompt (E, 1, C) and, with the [SEG]
        pointer, its map of the frame's tokens (the last image slots of `ids_EL`) as the mask prompt, else None."""
        model = self.model
        maps = model.pointer_maps(seg_hidden_ED[:, None], hidden_ELD, ids_EL)
        return model.seg_prompts(seg_hidden_ED)[:, None], model.mask_prompts(maps)

    def _decode(self, memory, t: int, feats, prompts) -> torch.Tensor:
        sparse_E1C, mask_prompt = prompts
        out = self.model.segmenter.step(memory, t, feats, sparse_BNC=sparse_E1C, mask_prompt=mask_prompt)
        return out.low_res_logits[:, 0].float()

    def _reset_memory(self, state: VideoState, start: int, reverse: bool):
        return self.model.segmenter.reset(num_frames=state.num_frames, start=start, reverse=reverse)


class StreamingEngine(_Base):
    def open(self, video, texts: list[str]) -> VideoState:
        state = super().open(video, texts)
        mllm = self.model.mllm
        prefix, _ = self.prompts.split_for_cache(texts[0], 1)
        ids = torch.tensor([prefix], device=self.device)
        with torch.no_grad():
            state.context_tokens = self._clip_tokens(load_frames(video, state.context))
            visual = mllm.relate_frames(state.context_tokens[None], len(state.context))
            _, cache = mllm.run(ids, visual, torch.ones_like(ids), use_cache=True)
        cache.batch_repeat_interleave(len(texts))  # one copy per expression, made once per video
        state.prefix_cache, state.prefix_len = cache, len(prefix)
        return state

    def _suffixes(self, state: VideoState, rounds: int):
        """Token ids of the query rounds of a window of `rounds` frames, per expression, right-padded."""
        if rounds not in state.suffixes:
            parts = [self.prompts.split_for_cache(t, rounds)[1] for t in state.texts]
            ids, mask = pad_right(parts, self.prompts.tok.pad_token_id)
            # checked here, once per window length, not by `embed` every frame (a device-to-host sync)
            slots = (ids == self.model.mllm.image_token_id).sum(1)
            if not bool((slots == rounds * self.model.mllm.tokens_per_frame()).all()):
                raise ValueError(f"a {rounds}-frame window's prompt holds {slots.tolist()} image slots, not "
                                 f"{rounds} x {self.model.mllm.tokens_per_frame()}")
            last = torch.tensor([len(p) - 1 for p in parts], device=self.device)
            state.suffixes[rounds] = (ids.to(self.device), mask.to(self.device), last)
        return state.suffixes[rounds]

    def _window_tokens(self, state: VideoState, window_WKD: torch.Tensor) -> torch.Tensor:
        """The window's visual tokens as the LLM reads them: with a video projector, related to the context frames
        and to each other (the context's own tokens do not depend on the window, so the cached prefix holds)."""
        mllm = self.model.mllm
        if mllm.video_projector is None:
            return window_WKD
        both = torch.cat([state.context_tokens, window_WKD])[None]
        return mllm.relate_frames(both, len(state.context))[0, len(state.context):]

    @torch.no_grad()
    def propagate(self, state: VideoState, start: int = 0, reverse: bool = False) -> Iterator[FrameResult]:
        E, mllm = len(state.texts), self.model.mllm
        order = pass_frames(state.num_frames, start, reverse)
        rows = torch.arange(E, device=self.device)
        memory = self._reset_memory(state, start, reverse)
        recent: dict[int, torch.Tensor] = {}  # CLIP tokens of the frames the window still needs
        for i, t in enumerate(order):
            frame = to_device(load_frames(state.video, [t])[0], self.device)  # once, for both encoders
            recent[t] = self._clip_tokens(frame[None])[0]
            frames = query_window(order, i, self.window)
            recent = {f: v for f, v in recent.items() if f in frames}
            ids, mask, last = self._suffixes(state, len(frames))
            attention = torch.cat([mask.new_ones(E, state.prefix_len), mask], 1)
            visual = self._window_tokens(state, torch.stack([recent[f] for f in frames]))[None].expand(E, -1, -1, -1)
            try:
                hidden, _ = mllm.run(ids, visual, attention, past_key_values=state.prefix_cache, use_cache=True,
                                     check=False)
            finally:  # drop the window's keys, even on an error: the next window reuses the prefix alone
                state.prefix_cache.crop(state.prefix_len - state.prefix_cache.get_seq_length())
            prompt = self._prompt(hidden[rows, last], hidden, ids)
            feats = self._sam_features(frame).expand(E)
            yield FrameResult(list(range(E)), t, self._decode(memory, t, feats, prompt))


class FaithfulLoop(_Base):
    @torch.no_grad()
    def propagate(self, state: VideoState, start: int = 0, reverse: bool = False) -> Iterator[FrameResult]:
        """The published loop: expression by expression, frame by frame, everything recomputed."""
        mllm, video = self.model.mllm, state.video
        order = pass_frames(state.num_frames, start, reverse)
        for e, text in enumerate(state.texts):
            memory = self._reset_memory(state, start, reverse)
            for i, t in enumerate(order):
                frames = query_window(order, i, self.window)
                prompt = self.prompts.collate([self.prompts.build(text, len(frames))], len(frames))
                ids, mask = prompt.input_ids.to(self.device), prompt.attention_mask.to(self.device)
                pixels = load_frames(video, state.context + frames)
                visual = mllm.relate_frames(self._clip_tokens(pixels)[None], len(state.context))
                hidden, _ = mllm.run(ids, visual, mask)
                seg_hidden = hidden[:, int(prompt.seg_positions[0, -1]) - 1]
                feats = self._sam_features(pixels[-1])
                yield FrameResult([e], t, self._decode(memory, t, feats, self._prompt(seg_hidden, hidden, ids)))


ENGINES = {"engine": StreamingEngine, "faithful": FaithfulLoop}
