"""Temporal referring videos: expressions that no single frame, and often no short window, can answer.

The kinds of `glus.data.synth.language` can all be solved frame by frame (look-alike twins differ in their motion
in every window). These scenes last 40-64 frames, so that 4 context frames and a 4-frame window see what matters
only by chance, and each refers to objects by what happened once:

- `event`: look-alike twins (same colour, shape, speed and direction, on two rows) that move alike except during
  one short event of the referred twin, a fifth of the video long: it pauses, turns back, jumps or dashes ahead.
  The referred twin's start is drawn so that over the frames it is ahead of its twin about half the time: where
  one is says little of which one it is.
- `crossing`: twins come from opposite sides on one line, meet (overlapping, behind the bar half of the time),
  part to two rows, one drawn at random to each, and leave side by side in one direction. The expression names
  the side one came from: after the meeting, nothing but its track tells.
- `order`: three objects of distinct looks do the same thing at three times (stop, start moving, or set off from
  the centre column at one speed and leave the frame), referred to by the order ("the first object to stop",
  "the last object to leave").

Every expression fits exactly the objects it names: tests/test_temporal.py reads each one back from the
trajectories alone, with readers of its own.
"""
from __future__ import annotations

import numpy as np

from glus.data.synth.language import Referral, caption
from glus.data.synth.render import render
from glus.data.synth.scene import COLOURS, SHAPES, Scene, SceneObject, _occluder, trajectory
from glus.data.synth.video import HEIGHT, SPLIT_SALT, WIDTH, SynthVideo

EVENT, CROSSING, ORDER = "event", "crossing", "order"
TEMPORAL_KINDS = (EVENT, CROSSING, ORDER)
TEMPORAL_SALT = 6  # the temporal videos' seed salt: none of them is a scene of the other generators

# what the referred twin does once; the phrases avoid the old kinds' "that stops" (which means for good)
EVENTS = {
    "pause": ("that pauses for a moment", "that halts briefly", "that waits for a while"),
    "turn": ("that turns back for a moment", "that briefly goes back", "that reverses for a while"),
    "jump": ("that jumps", "that hops once", "that makes a jump"),
    "dash": ("that dashes ahead for a moment", "that briefly speeds up", "that makes a quick dash"),
}
SIDES = {"left": ("that came from the left", "that started on the left", "that entered from the left side"),
         "right": ("that came from the right", "that started on the right", "that entered from the right side")}
ORDERS = {  # action -> {first | last: phrases}
    "stop": {"first": ("the first object to stop", "the object that stops first"),
             "last": ("the last object to stop", "the object that stops last")},
    "start": {"first": ("the first object to start moving", "the object that moves first"),
              "last": ("the last object to start moving", "the object that moves last")},
    "leave": {"first": ("the first object to leave", "the object that leaves first"),
              "last": ("the last object to leave", "the object that leaves last")},
}
DISTRACTOR_MOTIONS = ("left", "right", "up", "down", "still")  # none pauses, turns, jumps, dashes or stops


def _pick(options, rng: np.random.Generator) -> str:
    return str(options[int(rng.integers(len(options)))])


def _looks(rng: np.random.Generator, n: int) -> list[tuple[str, str]]:
    """n distinct (colour, shape) pairs."""
    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    return [pairs[k] for k in rng.choice(len(pairs), size=n, replace=False)]


def _distractors(rng, scene_objects: list[SceneObject], taken: set, width: int, height: int, num_frames: int,
                 count: int) -> None:
    """`count` objects of looks not yet in the scene, moving plainly (no event, no stop)."""
    for colour, shape in [p for p in _looks(rng, 6) if p not in taken][:count]:
        radius = int(rng.integers(9, 13))
        motion = _pick(DISTRACTOR_MOTIONS, rng)
        centres = trajectory(motion, num_frames, width, height, radius, rng)
        scene_objects.append(SceneObject(len(scene_objects), colour, shape, motion, radius, centres,
                                         z=len(scene_objects)))


# ---- event ------------------------------------------------------------------------------------------------

def event_path(event: str | None, x0: float, velocity: float, start: int, length: int, num_frames: int,
               lift: float) -> np.ndarray:
    """(T, 2) offsets (dx, dy) from (x0, 0): constant `velocity` along x, but during [start, start + length) the
    event: "pause" (velocity 0), "turn" (-velocity), "dash" (2.5 x velocity), "jump" (x as usual, y moved by up
    to `lift` pixels upwards on a half sine; a negative lift goes down); None: no event."""
    t = np.arange(num_frames)
    during = (t >= start) & (t < start + length)
    factor = {"pause": 0.0, "turn": -1.0, "dash": 2.5}.get(event, 1.0)
    step = np.where(during, factor, 1.0) * velocity
    x = x0 + np.concatenate([[0.0], np.cumsum(step[:-1])])
    y = np.zeros(num_frames)
    if event == "jump":
        y = np.where(during, -lift * np.sin(np.pi * (t - start + 0.5) / length), 0.0)
    return np.stack([x, y], 1)


def event_scene(rng: np.random.Generator, width: int, height: int, num_frames: int):
    radius = int(rng.integers(9, 13))
    margin = radius + 2
    (colour, shape), = _looks(rng, 1)
    event = _pick(tuple(EVENTS), rng)
    length = max(num_frames // 5, 4)
    start = int(rng.integers(int(0.2 * num_frames), int(0.75 * num_frames) - length))
    span = width - 2 * margin
    velocity = rng.uniform(0.3, 0.4) * span / (num_frames - 1) * rng.choice([-1, 1])
    rows = rng.permutation([margin + radius + 6 + rng.uniform(0, 8), height - margin - radius - 6 - rng.uniform(0, 8)])
    referred = int(rng.integers(2))
    paths = [event_path(event if k == referred else None, 0.0, velocity, start, length, num_frames,
                        lift=2.0 * radius * (1.0 if rows[k] > height / 2 else -1.0))  # a jump toward the centre
             for k in range(2)]
    # The referred twin starts ahead of the other by a draw centred on half of what its event costs it, so that
    # before the event it is ahead as often as it is behind after it: where one twin is says little of which it is.
    lag = paths[1 - referred][-1, 0] - paths[referred][-1, 0]
    for _ in range(100):
        ahead = rng.uniform(-0.25, 0.25) * span + lag / 2
        starts = np.zeros(2)
        starts[referred] = ahead
        lo = max(margin - (starts[k] + paths[k][:, 0].min()) for k in range(2))
        hi = min(width - margin - (starts[k] + paths[k][:, 0].max()) for k in range(2))
        if lo <= hi:
            break
    else:  # cannot happen at these speeds (the travel is under half the span)
        raise AssertionError("no room for the twins")
    base = rng.uniform(lo, hi)
    objects = [SceneObject(k, colour, shape, "right" if velocity > 0 else "left", radius,
                           paths[k] + [base + starts[k], rows[k]], z=k) for k in range(2)]
    _distractors(rng, objects, {(colour, shape)}, width, height, num_frames, int(rng.integers(0, 3)))
    text = f"the {colour} {shape} {_pick(EVENTS[event], rng)}"
    return Scene(width, height, num_frames, objects), [Referral(text, [referred], EVENT, caption(objects[referred]))]


# ---- crossing ---------------------------------------------------------------------------------------------

def came_from(centres: np.ndarray, width: int) -> str:
    """The side of the frame a track starts on."""
    return "left" if centres[0, 0] < width / 2 else "right"


def crossing_scene(rng: np.random.Generator, width: int, height: int, num_frames: int):
    radius = int(rng.integers(9, 13))
    margin = radius + 2
    (colour, shape), = _looks(rng, 1)
    meet_x = width / 2 + rng.uniform(-0.1, 0.1) * width
    meet_t = int(rng.integers(int(0.35 * num_frames), int(0.5 * num_frames)))
    part = 6  # frames over which the twins part to their rows after meeting
    line = height / 2 + rng.uniform(-0.15, 0.15) * height
    gap = radius + 4 + rng.uniform(0, 6)  # each row this far from the line: the twins no longer touch
    # after parting, both leave side by side in one direction, at one speed
    out_speed = rng.choice([-1, 1]) * rng.uniform(0.35, 0.45) * (width / 2 - margin) / (num_frames - meet_t - part)
    t = np.arange(num_frames, dtype=float)
    rows = rng.permutation([-gap, gap])  # which twin takes which row: a coin, so the row says nothing
    after = np.clip(t - meet_t - part, 0, None)
    objects = []
    for k, side in enumerate(("left", "right")):
        x_start = (margin + rng.uniform(0, 8)) if side == "left" else (width - margin - rng.uniform(0, 8))
        x = np.where(t <= meet_t, x_start + (meet_x - x_start) * t / meet_t, meet_x) + out_speed * after
        y = line + np.where(t <= meet_t, 0.0, rows[k] * np.clip((t - meet_t) / part, 0, 1))
        objects.append(SceneObject(k, colour, shape, "right" if out_speed > 0 else "left", radius,
                                   np.stack([x, y], 1), z=k))
    if rng.random() < 0.5:  # the bar over the meeting point: the twins meet out of sight
        bar = _occluder(len(objects), width, height, num_frames, rng)
        bar.centres[:, 0] = meet_x
        objects.append(bar)
    taken = {(colour, shape)}
    _distractors(rng, objects, taken, width, height, num_frames, int(rng.integers(0, 2)))
    referred = int(rng.integers(2))
    side = came_from(objects[referred].centres, width)
    text = f"the {colour} {shape} {_pick(SIDES[side], rng)}"
    return Scene(width, height, num_frames, objects), [Referral(text, [referred], CROSSING,
                                                                caption(objects[referred]))]


# ---- order ------------------------------------------------------------------------------------------------

def order_scene(rng: np.random.Generator, width: int, height: int, num_frames: int):
    action = _pick(tuple(ORDERS), rng)
    looks = _looks(rng, 3)
    # three times in a random order of the objects; a leaving object sets off at its time and is out of sight
    # within 20 frames (at 5-6 px per frame), so those times come earlier and closer
    if action == "leave":
        first = int(rng.integers(int(0.05 * num_frames), int(0.15 * num_frames) + 1))
        gap = int(rng.integers(num_frames // 7, num_frames // 6 + 1))
    else:
        first = int(rng.integers(int(0.2 * num_frames), int(0.3 * num_frames)))
        gap = int(rng.integers(num_frames // 6, num_frames // 5 + 1))
    times = rng.permutation([first, first + gap, first + 2 * gap])
    direction = rng.choice([-1, 1])
    leave_speed = direction * rng.uniform(5.0, 6.0)
    t = np.arange(num_frames, dtype=float)
    rows = np.linspace(0.2, 0.8, 3)[rng.permutation(3)] * height
    objects = []
    for k, ((colour, shape), when, row) in enumerate(zip(looks, times, rows)):
        radius = int(rng.integers(9, 12))
        margin = radius + 2
        if action == "leave":  # waits at the centre column, sets off at `when`, all at one speed: the order of
            # leaving is the order of setting off, and no frame before the first start or after the last exit tells
            x = width / 2 + leave_speed * np.maximum(t - when, 0.0)
            motion = "leaving"
        else:
            speed = direction * rng.uniform(0.6, 1.0)
            active = np.minimum(t, when) if action == "stop" else np.maximum(t - when, 0.0)
            travel = speed * (when if action == "stop" else num_frames - 1 - when)
            x0 = (margin if direction > 0 else width - margin) + rng.uniform(0, 10) * direction
            x0 = np.clip(x0, margin, width - margin - abs(travel)) if direction > 0 else \
                np.clip(x0, margin + abs(travel), width - margin)
            x = x0 + speed * active
            motion = "stopping" if action == "stop" else ("right" if direction > 0 else "left")
        objects.append(SceneObject(k, colour, shape, motion, radius, np.stack([x, np.full_like(t, row)], 1), z=k))
    which = _pick(("first", "last"), rng)
    referred = int(np.argmin(times) if which == "first" else np.argmax(times))
    text = _pick(ORDERS[action][which], rng)
    return Scene(width, height, num_frames, objects), [Referral(text, [referred], ORDER, caption(objects[referred]))]


SCENES = {EVENT: event_scene, CROSSING: crossing_scene, ORDER: order_scene}


def make_temporal_video(seed: int, split: str, i: int, kind: str | None = None) -> SynthVideo:
    """Temporal video i of `split` (a pure function of seed, split, i): of `kind`, or of the kind i names in
    turn (event, crossing, order, event, ...)."""
    kind = kind or TEMPORAL_KINDS[i % len(TEMPORAL_KINDS)]
    rng = np.random.default_rng([seed, TEMPORAL_SALT, SPLIT_SALT[split], i, TEMPORAL_KINDS.index(kind)])
    num_frames = int(rng.integers(40, 65))
    scene, referrals = SCENES[kind](rng, WIDTH, HEIGHT, num_frames)
    frames, labels = render(scene, rng)
    return SynthVideo(f"{split}_{kind}_{i:04d}", scene, frames, labels, referrals)
