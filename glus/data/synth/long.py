"""Long synthetic videos for drift: hundreds of frames where objects bounce, cross, leave and come back.

The training scenes last 12-20 frames and each object makes one motion. A memory that tracks for 20 frames may
still drift over 300: its state fills with stale frames, a twin that crossed its path takes its place, an object
that left the frame is not found again. These scenes ask for exactly that: every object moves at a constant speed
and bounces off the walls of a box; for a "wanderer" the box reaches beyond the frame, so it leaves and re-enters,
absent for a while in between; a look-alike pair (same colour and shape) runs on nearly the same line in opposite
directions, so the twins cross again and again; a grey bar hides what passes behind it. One expression per object
("the red circle", "the red circle, the second one" for a twin): the plain VOS path is scored per object
(`glus vos-eval --windows 50`: J&F in the first and the last 50 frames from each object's first appearance).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from glus.data.synth.language import Referral
from glus.data.synth.render import render
from glus.data.synth.scene import COLOURS, SHAPES, Scene, SceneObject, _occluder
from glus.data.synth.video import HEIGHT, WIDTH, SynthVideo
from glus.data.synth.writer import write_mevis_split

LONG_KIND = "long"  # the kind the expressions of a long video carry (one per object)
LONG_SALT = 5       # the long videos' seed salt: none of them is a scene of the written or streamed splits


def bounce(start: float, speed: float, low: float, high: float, num_frames: int) -> np.ndarray:
    """(T,) positions from `start` at `speed` per frame, reflected off `low` and `high` (a triangle wave)."""
    span = high - low
    u = np.mod(start - low + speed * np.arange(num_frames, dtype=float), 2 * span)
    return low + np.where(u <= span, u, 2 * span - u)


def _speed(rng: np.random.Generator) -> float:
    return float(rng.uniform(0.8, 2.2) * rng.choice([-1, 1]))


def long_trajectory(rng: np.random.Generator, width: int, height: int, radius: int, num_frames: int,
                    wanderer: bool) -> np.ndarray:
    """(T, 2) centres bouncing inside the frame, or (a wanderer) inside a box a frame's width wider, which takes
    the object out of sight and back."""
    margin = radius + 2
    out_x = width // 2 if wanderer else 0
    low_x, high_x = margin - out_x, width - margin + out_x
    x = bounce(rng.uniform(margin, width - margin), _speed(rng), low_x, high_x, num_frames)
    y = bounce(rng.uniform(margin, height - margin), _speed(rng) * 0.5, margin, height - margin, num_frames)
    return np.stack([x, y], 1)


def twin_trajectories(rng: np.random.Generator, width: int, height: int, radius: int,
                      num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Two objects on nearly one horizontal line, bouncing in opposite directions: they cross every few dozen
    frames, partly overlapping, and look the same."""
    margin = radius + 2
    y = rng.uniform(margin + radius, height - margin - radius)
    dy = rng.uniform(0.6, 1.2) * radius * rng.choice([-1, 1])
    speed = float(rng.uniform(1.0, 2.2))  # they cross at least twice in 300 frames
    paths = []
    for start, direction, line in ((margin, 1, y), (width - margin, -1, y + dy)):
        x = bounce(start, direction * speed, margin, width - margin, num_frames)
        paths.append(np.stack([x, np.full(num_frames, line)], 1))
    return paths[0], paths[1]


def make_long_scene(rng: np.random.Generator, width: int, height: int, num_frames: int) -> Scene:
    """A twin pair, one or two wanderers, sometimes a still object, and a bar half of the time."""
    colours = list(rng.permutation(list(COLOURS)))
    objects: list[SceneObject] = []

    def add(colour, shape, motion, centres, radius):
        objects.append(SceneObject(len(objects), colour, shape, motion, radius, centres, z=len(objects)))

    radius = int(rng.integers(9, 13))
    colour, shape = colours.pop(), str(rng.choice(SHAPES))
    for centres in twin_trajectories(rng, width, height, radius, num_frames):
        add(colour, shape, "bouncing", centres, radius)
    for _ in range(int(rng.integers(1, 3))):
        r = int(rng.integers(9, 13))
        add(colours.pop(), str(rng.choice(SHAPES)), "wandering",
            long_trajectory(rng, width, height, r, num_frames, wanderer=True), r)
    if rng.random() < 0.5:
        r = int(rng.integers(9, 13))
        add(colours.pop(), str(rng.choice(SHAPES)), "bouncing",
            long_trajectory(rng, width, height, r, num_frames, wanderer=False), r)
    if rng.random() < 0.5:
        objects.append(_occluder(len(objects), width, height, num_frames, rng))
    return Scene(width, height, num_frames, objects)


def long_referrals(scene: Scene) -> list[Referral]:
    """One expression per object (the bar too), each naming exactly its object."""
    out, seen = [], {}
    for o in scene.objects:
        look = (o.colour, o.shape)
        seen[look] = seen.get(look, 0) + 1
        text = f"the {o.colour} {o.shape}" + (", the second one" if seen[look] == 2 else "")
        out.append(Referral(text, [o.obj_id], LONG_KIND, text))
    return out


def make_long_video(seed: int, i: int, num_frames: int):
    """Long video i of `seed`: a pure function of (seed, i, num_frames)."""
    rng = np.random.default_rng([seed, LONG_SALT, i, num_frames])
    scene = make_long_scene(rng, WIDTH, HEIGHT, num_frames)
    frames, labels = render(scene, rng)
    return SynthVideo(f"long_{i:04d}", scene, frames, labels, long_referrals(scene))


def write_long(out, seed: int = 0, videos: int = 8, num_frames: int = 300, progress: bool = True) -> int:
    """OUT/mevis/valid_u: `videos` long videos with their masks, in the MeViS layout (`glus vos-eval` reads it)."""
    made = [make_long_video(seed, i, num_frames) for i in tqdm(range(videos), desc="long videos",
                                                                 disable=not progress)]
    write_mevis_split(Path(out), "valid_u", made, with_masks=True, pixel_presence=True)
    return len(made)
