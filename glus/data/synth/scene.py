"""Scenes: objects with a colour, a shape and a motion, and their position in every frame.

Motions are chosen so that every GLUS capability matters: look-alike objects (same colour and shape) differ
only in how they move, so the model needs context frames and memory; objects enter late or leave the frame
(absent masks); a static bar can hide objects that pass behind it (occlusion).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from glus.vocabulary import COLOURS, SHAPES

MOTIONS = ("left", "right", "up", "down", "still", "speeding", "stopping", "entering", "leaving")


@dataclass
class SceneObject:
    obj_id: int
    colour: str
    shape: str               # one of SHAPES, or "bar" for the occluder
    motion: str              # one of MOTIONS
    radius: int
    centres: np.ndarray      # (T, 2) float centre (x, y) per frame
    z: int                   # drawing order: higher is in front

    def present(self, t: int, width: int, height: int) -> bool:
        """Some part of the object lies inside the frame."""
        x, y = self.centres[t]
        r = self.radius
        return x + r > 0 and x - r < width and y + r > 0 and y - r < height


@dataclass
class Scene:
    width: int
    height: int
    num_frames: int
    objects: list[SceneObject]


def trajectory(motion: str, num_frames: int, width: int, height: int, radius: int,
               rng: np.random.Generator) -> np.ndarray:
    """(T, 2) centres for one motion; speeds are drawn so the motion is visible within the clip."""
    t = np.arange(num_frames, dtype=float)
    margin = radius + 2
    x0 = rng.uniform(margin, width - margin)
    y0 = rng.uniform(margin, height - margin)
    span_x, span_y = width - 2 * margin, height - 2 * margin
    v = rng.uniform(0.5, 0.8)  # fraction of the free span crossed over the clip
    if motion in ("left", "right"):
        sign = -1 if motion == "left" else 1
        x0 = margin + (span_x if sign < 0 else 0) + sign * rng.uniform(0, 0.2) * span_x
        return np.stack([x0 + sign * v * span_x * t / (num_frames - 1), np.full_like(t, y0)], 1)
    if motion in ("up", "down"):
        sign = -1 if motion == "up" else 1
        y0 = margin + (span_y if sign < 0 else 0) + sign * rng.uniform(0, 0.2) * span_y
        return np.stack([np.full_like(t, x0), y0 + sign * v * span_y * t / (num_frames - 1)], 1)
    if motion == "still":
        return np.stack([np.full_like(t, x0), np.full_like(t, y0)], 1)
    sign = rng.choice([-1, 1])
    start = margin if sign > 0 else width - margin
    if motion == "speeding":  # quadratic: slow at first, fast at the end
        return np.stack([start + sign * 0.85 * span_x * (t / (num_frames - 1)) ** 2, np.full_like(t, y0)], 1)
    if motion == "stopping":  # moves over the first half, then rests
        stop = (num_frames - 1) / 2
        return np.stack([start + sign * 0.6 * span_x * np.minimum(t, stop) / stop, np.full_like(t, y0)], 1)
    if motion == "entering":  # outside the frame for the first third, then slides in
        outside = -radius - 1 if sign > 0 else width + radius + 1
        enter = int(num_frames // 3)
        depth = rng.uniform(0.2, 0.5) * span_x
        inside = margin + depth if sign > 0 else width - margin - depth
        k = np.clip((t - enter) / max(num_frames - 1 - enter, 1), 0, 1)
        x = np.where(t < enter, outside, outside + (inside - outside) * k)
        return np.stack([x, np.full_like(t, y0)], 1)
    if motion == "leaving":  # starts inside, fully outside by two thirds of the clip
        leave = max(int(2 * num_frames // 3), 2)
        inside = width / 2 + rng.uniform(-0.15, 0.15) * span_x
        outside = width + radius + 1 if sign > 0 else -radius - 1
        k = np.clip(t / leave, 0, 1)
        return np.stack([inside + (outside - inside) * k, np.full_like(t, y0)], 1)
    raise ValueError(f"unknown motion {motion!r}")


def make_scene(rng: np.random.Generator, width: int, height: int, num_frames: int) -> Scene:
    """2-4 objects; often a look-alike pair that differs only by motion; sometimes an occluding bar."""
    n = int(rng.integers(2, 5))
    colours = list(rng.permutation(list(COLOURS)))
    kinds = list(rng.permutation(MOTIONS))
    objects: list[SceneObject] = []
    lookalike = rng.random() < 0.6
    for k in range(n):
        if lookalike and k == 1:  # the distractor: same colour and shape as object 0, another motion
            colour, shape = objects[0].colour, objects[0].shape
        else:
            colour, shape = colours.pop(), str(rng.choice(SHAPES))
        motion = kinds.pop()
        radius = int(rng.integers(9, 14))
        centres = trajectory(motion, num_frames, width, height, radius, rng)
        objects.append(SceneObject(k, colour, shape, motion, radius, centres, z=k))
    if rng.random() < 0.35:
        objects.append(_occluder(len(objects), width, height, num_frames, rng))
    return Scene(width, height, num_frames, objects)


def _occluder(obj_id: int, width: int, height: int, num_frames: int, rng) -> SceneObject:
    """A static vertical grey bar drawn in front of everything: objects moving sideways pass behind it."""
    x = rng.uniform(0.3, 0.7) * width
    centres = np.tile([x, height / 2], (num_frames, 1))
    return SceneObject(obj_id, "grey", "bar", "still", radius=7, centres=centres, z=100)
