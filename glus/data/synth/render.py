"""Drawing scenes: RGB frames and label maps (0 = background, obj_id + 1 = object) with the same geometry,
so that masks match the pixels exactly. Later-drawn (higher z) objects hide earlier ones."""
from __future__ import annotations

import cv2
import numpy as np

from glus.data.synth.scene import COLOURS, Scene, SceneObject

GREY = (128, 128, 128)


def _draw(canvas: np.ndarray, obj: SceneObject, t: int, value) -> None:
    x, y = obj.centres[t]
    r = obj.radius
    h = canvas.shape[0]
    if obj.shape == "circle":
        cv2.circle(canvas, (int(round(x)), int(round(y))), r, value, thickness=-1)
    elif obj.shape == "square":
        cv2.rectangle(canvas, (int(round(x - r)), int(round(y - r))), (int(round(x + r)), int(round(y + r))),
                      value, thickness=-1)
    elif obj.shape == "triangle":
        pts = np.array([[x, y - r], [x - r, y + r], [x + r, y + r]]).round().astype(np.int32)
        cv2.fillPoly(canvas, [pts], value)
    elif obj.shape == "bar":
        cv2.rectangle(canvas, (int(round(x - r)), 0), (int(round(x + r)), h - 1), value, thickness=-1)
    else:
        raise ValueError(f"unknown shape {obj.shape!r}")


def background(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A soft colour gradient, different per video, so that frames are not flat."""
    c0, c1 = rng.uniform(20, 70, size=3), rng.uniform(20, 70, size=3)
    ramp = np.linspace(0, 1, width)[None, :, None]
    return np.broadcast_to(c0 + (c1 - c0) * ramp, (height, width, 3)).astype(np.float32)


def render(scene: Scene, rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Frames (uint8 RGB, H x W x 3) and label maps (uint8, H x W) for every frame."""
    bg = background(scene.width, scene.height, rng)
    frames, labels = [], []
    for t in range(scene.num_frames):
        image, label = draw_frame(scene, bg, t, rng.normal(0, 4, bg.shape))
        frames.append(image)
        labels.append(label)
    return frames, labels


def draw_frame(scene: Scene, bg: np.ndarray, t: int, noise: np.ndarray | None = None,
               labels: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Frame t of a scene over the background `bg` (float, + `noise`; or uint8): (uint8 RGB image, label map
    or None)."""
    if noise is None and bg.dtype == np.uint8:  # a background converted once (GeneratedVideo)
        image = np.array(bg, order="C")
    else:
        image = np.ascontiguousarray(((bg + noise) if noise is not None else bg).clip(0, 255).astype(np.uint8))
    label = np.zeros((scene.height, scene.width), dtype=np.uint8) if labels else None
    for obj in sorted(scene.objects, key=lambda o: o.z):
        _draw(image, obj, t, tuple(int(c) for c in COLOURS.get(obj.colour, GREY)))
        if label is not None:
            _draw(label, obj, t, obj.obj_id + 1)
    return np.ascontiguousarray(image), label
