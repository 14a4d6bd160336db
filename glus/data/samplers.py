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
    """The centre frame of each of n equal segments (GLUS inference): fixed for a video."""
    _check(num_frames)
    return [min(int((i + 0.5) * num_frames / n), num_frames - 1) for i in range(n)]


def query_frames(num_frames: int, q: int, rng: np.random.Generator) -> list[int]:
    """q consecutive frames from a random start. A video shorter than q gives all its frames, then repeats the
    last one, so that every sample has q query frames (the memory sees a still frame, not a jump)."""
    _check(num_frames)
    if num_frames <= q:
        return list(range(num_frames)) + [num_frames - 1] * (q - num_frames)
    start = int(rng.integers(0, num_frames - q + 1))
    return list(range(start, start + q))


def sliding_windows(num_frames: int, size: int, stride: int = 1) -> list[list[int]]:
    """Windows of up to `size` frames, each ending at its newest frame t = 0, stride, 2*stride, ...

    GLUS inference (size 4, stride 1) outputs the mask of each window's last frame; the first windows are
    shorter because no earlier frames exist. The last frame is always covered.
    """
    _check(num_frames)
    if size < 1 or stride < 1:
        raise ValueError(f"window size and stride must be >= 1, got size={size}, stride={stride}")
    ends = list(range(0, num_frames, stride))
    if ends[-1] != num_frames - 1:
        ends.append(num_frames - 1)
    return [list(range(max(0, t - size + 1), t + 1)) for t in ends]


def _check(num_frames: int) -> None:
    if num_frames < 1:
        raise ValueError("a video needs at least one frame")
