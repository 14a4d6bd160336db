"""One synthetic video: its scene, frames, label maps and expressions, a pure function of (seed, split, index)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from glus.data.synth.language import describe
from glus.data.synth.render import render
from glus.data.synth.scene import Scene, make_scene

WIDTH, HEIGHT = 160, 120
SPLIT_SALT = {"train": 0, "valid_u": 1, "valid": 2, "test": 3, "stream": 4}  # stream: never written


@dataclass(eq=False)
class SynthVideo:
    vid: str
    scene: Scene
    frames: list[np.ndarray]
    labels: list[np.ndarray]
    referrals: list = field(default_factory=list)


def make_video(seed: int, split: str, i: int, no_target_rate: float = 0.0) -> SynthVideo:
    rng = np.random.default_rng([seed, SPLIT_SALT[split], i])
    num_frames = int(rng.integers(12, 21))
    scene = make_scene(rng, WIDTH, HEIGHT, num_frames)
    frames, labels = render(scene, rng)
    referrals = describe(scene, rng, no_target=rng.random() < no_target_rate)
    return SynthVideo(f"{split}_{i:04d}", scene, frames, labels, referrals)
