"""Sparse mode: the LLM only where it is needed, the plain VOS path in between.

`glus predict --mode sparse --every K --vos VOS_EXPORT`. In each pass (forward from the start frame, or
backward from a key frame), the anchors are the pass' frames at positions 0, K, 2K, ... and its last frame.
GLUS (the streaming engine, its memory spanning the anchors) segments the anchors only: its context frames and
query windows are drawn from the anchors, so the language model never reads another frame. Between two
anchors a and b, the VOS model propagates a's GLUS mask forward and b's backward (each from a fresh memory,
every expression of the chunk in one batch) and the two are merged frame by frame:

    logits(t) = (b - t)/(b - a) * forward(t) + (t - a)/(b - a) * backward(t)      (positions along the pass)

a linear blend by temporal distance, so each frame leans on its nearer anchor and the masks meet smoothly.
The SAM-2 features of a gap's frames are computed once for both directions. With `--every 0` and key frames,
the key frame is the only anchor: GLUS segments it, the VOS path carries it to both ends of the video.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from glus.data.frames import load_frames
from glus.infer.engine import FrameResult, StreamingEngine, VideoState, pass_frames
from glus.infer.vos import encoder_of, run_order


def anchor_positions(length: int, every: int) -> list[int]:
    """Positions along a pass of `length` frames where GLUS runs: 0, K, 2K, ... and the last (every 0: 0)."""
    if every < 0:
        raise ValueError(f"--every must be >= 0, got {every}")
    if every == 0:
        return [0]
    return sorted(set(range(0, length, every)) | {length - 1})


@dataclass
class SparseState:
    full: VideoState                 # the whole video (what predict_split sees)
    texts: list[str]

    @property
    def num_frames(self) -> int:
        return self.full.num_frames


class SparseEngine:
    def __init__(self, model, tokenizer, vos_model, every: int = 8, num_context: int = 4, window: int = 4):
        self.model, self.vos, self.every = model.eval(), vos_model.eval(), every
        self.glus = StreamingEngine(model, tokenizer, num_context=num_context, window=window)

    def open(self, video, texts: list[str]) -> SparseState:
        return SparseState(VideoState(video, list(texts), []), list(texts))

    @torch.no_grad()
    def propagate(self, state: SparseState, start: int = 0, reverse: bool = False) -> Iterator[FrameResult]:
        video = state.full.video
        order = pass_frames(len(video.frames), start, reverse)
        anchors = [order[p] for p in anchor_positions(len(order), self.every)]
        ascending = sorted(anchors)
        sub = replace(video, frames=[video.frames[t] for t in ascending])  # GLUS sees the anchors only
        inner = self.glus.open(sub, state.texts)
        previous = None
        for result in self.glus.propagate(inner, ascending.index(start), reverse):
            frame = ascending[result.frame]
            current = FrameResult(result.expressions, frame, result.logits)
            if previous is not None:
                yield from self._gap(video, previous, current, order)
            yield current
            previous = current
        last = order.index(previous.frame)
        if last < len(order) - 1:  # one anchor only: the VOS path carries it to the end of the pass
            yield from self._one_side(video, previous, order[last:])

    def _encoder(self, video):
        cache: dict[int, tuple] = {}
        encode = encoder_of(self.vos, lambda t: load_frames(video, [t])[0])

        def cached(t: int, prior=None):  # with RDS, a frame is routed by the first pass that reaches it
            if t not in cache:
                cache[t] = encode(t, prior)
            return cache[t]
        return cached

    def _propagated(self, video, anchor: FrameResult, frames: list[int], encode) -> dict[int, torch.Tensor]:
        """{frame: VOS logits at GLUS' low resolution} along `frames`, which start at the anchor."""
        masks = anchor.logits > 0
        size = anchor.logits.shape[-2:]
        out = {}
        for t, logits, _, _ in run_order(self.vos, encode, masks, frames, len(video.frames), joint_objects=False):
            if t != frames[0]:
                out[t] = F.interpolate(logits[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        return out

    def _gap(self, video, a: FrameResult, b: FrameResult, order: list[int]) -> Iterator[FrameResult]:
        i, j = order.index(a.frame), order.index(b.frame)
        if j - i < 2:
            return
        encode = self._encoder(video)  # one gap's features, shared by both directions
        forward = self._propagated(video, a, order[i:j], encode)
        backward = self._propagated(video, b, order[i + 1:j + 1][::-1], encode)
        for p in range(i + 1, j):
            t, w = order[p], (j - p) / (j - i)
            yield FrameResult(a.expressions, t, w * forward[t] + (1 - w) * backward[t])

    def _one_side(self, video, anchor: FrameResult, frames: list[int]) -> Iterator[FrameResult]:
        for t, logits in self._propagated(video, anchor, frames, encoder_of(
                self.vos, lambda t: load_frames(video, [t])[0])).items():
            yield FrameResult(anchor.expressions, t, logits)
