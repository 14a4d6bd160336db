"""Videos drawn on demand, at any size and length: for benchmarks and the GPU check (1,000 frames at 4K would
be 25 GB as arrays and minutes of JPEG decoding). Frame i is a pure function of (seed, size, length, i): the
synthetic scenes of `glus.data.synth`, without pixel noise, drawn only when read (`load_frames` calls
`read_frame`), so that reading a long video holds one frame at a time."""
from __future__ import annotations

import numpy as np

from glus.data.synth.render import background, draw_frame
from glus.data.synth.scene import make_scene


class GeneratedVideo:
    def __init__(self, num_frames: int, width: int, height: int, seed: int = 0, video_id: str | None = None):
        rng = np.random.default_rng([seed, width, height, num_frames])
        self.scene = make_scene(rng, width, height, num_frames)
        self._bg = np.ascontiguousarray(background(width, height, rng).clip(0, 255).astype(np.uint8))
        self.id = video_id or f"generated_{width}x{height}_{num_frames}"
        self.frames = [f"{t:05d}" for t in range(num_frames)]
        self.height, self.width = height, width

    def read_frame(self, i: int) -> np.ndarray:
        if not 0 <= i < len(self.frames):
            raise IndexError(f"frame {i} of a {len(self.frames)}-frame generated video")
        return draw_frame(self.scene, self._bg, i, labels=False)[0]
