"""Frame samplers. Deterministic: the random ones draw from `rng_for(seed, sample_index)`.

The published code never seeded its sampling; here the same (seed, sample index) always gives the same frames,
on any worker and after a resume.
"""
from __future__ import annotations

import numpy as np


def rng_for(seed: int, sample_index: int, *salt: int) -> np.random.Generator:
    return np.random.default_rng([seed, sample_index, *salt])


def _segments(num_frames: int, n: int) -> list[tuple[int, int]]:
    """n equal segments [lo, hi) over the frames; with fewer frames than segments, frames repeat."""
    bounds = np.linspace(0, num_frames, n + 1)
    out = []
    for i in range(n):
        lo = int(np.floor(bounds[i]))
        hi = max(int(np.floor(bounds[i + 1])), lo + 1)
        out.append((min(lo, num_frames - 1), min(hi, num_frames)))
    return out


def train_context_frames(num_frames: int, n: int, rng: np.random.Generator) -> list[int]:
    """One random frame from each of n equal segments (GLUS training), in temporal order."""
    _check(num_frames)
    return [int(rng.integers(lo, hi)) for lo, hi in _segments(num_frames, n)]


def inference_context_frames(num_frames: int, n: int) -> list[int]:
    """The context frames of GLUS inference, fixed for a video, as the published `inference_iter.py` picks them:
    segment bounds b = linspace(0, T, n+1) cast to int, and frame min(b[j] + ceil(T/n)//2, b[j+1]-1) of segment
    j: near the centre of each segment. Where a segment is empty (T < n) the published code indexes frame -1
    (the last frame); here it takes the nearest frame of the video instead."""
    _check(num_frames)
    if n == 0:  # the ablation's "query frames only"
        return []
    bounds = np.linspace(0, num_frames, n + 1).astype(int)
    offset = -(-num_frames // n) // 2
    return [int(min(max(bounds[j + 1] - 1, 0), bounds[j] + offset)) for j in range(n)]


def query_frames(num_frames: int, q: int, rng: np.random.Generator) -> list[int]:
    """q consecutive frames from a random start. A video shorter than q gives all its frames, then repeats the
    last one, so that every sample has q query frames (the memory sees a still frame, not a jump)."""
    _check(num_frames)
    if num_frames <= q:
        return list(range(num_frames)) + [num_frames - 1] * (q - num_frames)
    start = int(rng.integers(0, num_frames - q + 1))
    return list(range(start, start + q))


def query_window(order: list[int], i: int, size: int) -> list[int]:
    """The query frames of GLUS inference when the i-th frame of a pass is segmented: the up to `size` frames of
    the pass ending there, oldest first. The first windows grow ([f0], [f0, f1], ...) and then the window
    slides by one frame, as the published loop; a backward pass gives its frames in reverse time order."""
    if size < 1:
        raise ValueError(f"the query window needs at least one frame, got size={size}")
    return list(order[max(0, i - size + 1): i + 1])


def _check(num_frames: int) -> None:
    if num_frames < 1:
        raise ValueError("a video needs at least one frame")
