"""Propagation with the plain VOS path: masks given on one frame, carried forward and backward, streaming.

Frames are read one at a time as the pass reaches them (`read_frame(i) -> uint8 (H, W, 3)`), so that a pass
holds only what its memory keeps, never the video: with the gated-linear memory a 10,000-frame video takes
the memory of a 100-frame one (`make bench`).

A pass yields, frame by frame, the objects' logits at the frame's size and the memory state after it; the
caller may save that state (`torch.save`) and later continue the pass from it, exactly (`glus vos` resumes so).
Both directions: forward from the start frame to the last, then, from a fresh memory, backward from the start
frame to the first; the start frame's output comes from the forward pass (the given masks, as SAM-2 outputs
them).
"""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from glus.model.segmenter.rds import RoutePrior
from glus.model.vos import VOSModel, objects_union

FrameReader = Callable[[int], np.ndarray]


def pass_order(start: int, num_frames: int, reverse: bool) -> list[int]:
    return list(range(start, -1, -1)) if reverse else list(range(start, num_frames))


def encoder_of(model: VOSModel, read_frame: FrameReader) -> Callable:
    """(frame index, RDS route prior or None) -> (SAM-2 features of the frame, its (H, W)), reading the frame
    when asked."""
    seg = model.segmenter
    device = next(model.parameters()).device

    def encode(t: int, prior: RoutePrior | None = None):
        pixels = read_frame(t)
        frame = torch.from_numpy(np.ascontiguousarray(pixels))[None].to(device)
        return seg.encode_image(seg.preprocess(frame), prior), pixels.shape[:2]
    return encode


@torch.no_grad()
def run_order(model: VOSModel, encode: Callable, masks_NHW: torch.Tensor, order: list[int], num_frames: int,
              resume: tuple | None = None, joint_objects: bool = True) -> Iterator[tuple[int, torch.Tensor, tuple, object]]:
    """(frame, low-resolution logits (N, h, w), frame size, state) along `order`, a run of consecutive frames
    in either direction whose first frame carries the given masks. `resume`: (state, last frame done).
    joint_objects: the N masks are distinct objects of the video (False: e.g. expressions, which may overlap)."""
    reverse = len(order) > 1 and order[1] < order[0]
    N = masks_NHW.size(0)
    if resume is None:
        state = model.segmenter.reset(num_frames=num_frames, start=order[0], reverse=reverse,
                                      joint_objects=joint_objects)
    else:
        state, last = resume
        order = order[order.index(last) + 1:]
    for t in order:
        feats, size = encode(t, getattr(state, "route_prior", None))
        if t == state.start and resume is None:
            out = model.start(state, t, feats, masks_NHW.to(feats.vision_feats[-1].device))
        else:
            out = model.track(state, t, feats, N)
        if feats.routing is not None:  # RDS: this frame's prediction and routing route the next frame
            probs = objects_union(out.high_res_logits.float().sigmoid().transpose(0, 1))
            state.route_prior = RoutePrior(probs, feats.routing.keep)  # in the state: a resumed pass keeps it
        yield t, out.low_res_logits[:, 0].float(), size, state


def run_pass(model: VOSModel, read_frame: FrameReader, masks_NHW: torch.Tensor, start: int, num_frames: int,
             reverse: bool = False, resume: tuple | None = None) -> Iterator[tuple[int, torch.Tensor, object]]:
    """(frame index, logits (N, H, W) at the frame's size, state) for each frame of one pass, the start frame
    first. `resume`: (state, last frame done) as yielded earlier by the same pass: continue after that frame."""
    order = pass_order(start, num_frames, reverse)
    for t, logits, size, state in run_order(model, encoder_of(model, read_frame), masks_NHW, order, num_frames,
                                            resume):
        up = F.interpolate(logits[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        yield t, up.cpu(), state


def propagate(model: VOSModel, read_frame: FrameReader, masks_NHW: torch.Tensor, start: int,
              num_frames: int) -> Iterator[tuple[int, torch.Tensor]]:
    """(frame index, logits (N, H, W)) for every frame of the video: forward from `start`, then backward."""
    for t, logits, _ in run_pass(model, read_frame, masks_NHW, start, num_frames):
        yield t, logits
    if start > 0:
        for t, logits, _ in run_pass(model, read_frame, masks_NHW, start, num_frames, reverse=True):
            if t != start:
                yield t, logits


def to_label_map(logits_NHW: torch.Tensor) -> np.ndarray:
    """One label per pixel: 1 + the object with the highest logit where that logit is positive, else 0 (the
    objects of a palette PNG cannot overlap)."""
    best, idx = logits_NHW.max(0)
    return torch.where(best > 0, idx + 1, 0).to(torch.uint8).numpy()
