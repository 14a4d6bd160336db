"""Referring expressions for a scene, each with the objects it refers to.

Every expression is unambiguous in its video: appearance alone where no look-alike exists, appearance plus
motion where one does, motion alone where the motion is unique, and plural expressions for groups.
Several expressions per object give the contrastive loss its positives.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from glus.data.synth.scene import COLOURS, SHAPES, Scene

MOTION_PHRASES = {
    "left": ("moving left", "going to the left", "that moves leftwards"),
    "right": ("moving right", "going to the right", "that moves rightwards"),
    "up": ("moving up", "going upwards", "that rises"),
    "down": ("moving down", "going downwards", "that falls"),
    "still": ("that stays still", "not moving", "standing still"),
    "speeding": ("speeding up", "that accelerates", "moving faster and faster"),
    "stopping": ("that stops", "moving and then stopping", "that comes to a halt"),
    "entering": ("entering late", "that appears later", "coming into view"),
    "leaving": ("leaving the frame", "that moves out of view", "that disappears"),
}
PLURAL_MOTION = {
    "left": "moving left", "right": "moving right", "up": "moving up", "down": "moving down",
    "still": "that stay still", "speeding": "speeding up", "stopping": "that stop",
    "entering": "entering late", "leaving": "leaving the frame",
}


@dataclass
class Referral:
    text: str
    obj_ids: list[int]


def _pick(options, rng: np.random.Generator) -> str:
    return str(options[int(rng.integers(len(options)))])


def describe(scene: Scene, rng: np.random.Generator, no_target: bool = False) -> list[Referral]:
    objs = scene.objects
    looks = Counter((o.colour, o.shape) for o in objs)
    motions = Counter(o.motion for o in objs)
    out: list[Referral] = []
    for o in objs:
        name = f"{o.colour} {o.shape}"
        texts = set()
        if looks[(o.colour, o.shape)] == 1:
            texts.add(_pick((f"the {name}", f"the {o.shape} that is {o.colour}", f"{name}"), rng))
        phrases = MOTION_PHRASES[o.motion]
        for phrase in rng.choice(phrases, size=2, replace=False):
            texts.add(f"the {name} {phrase}")
        if motions[o.motion] == 1 and o.shape != "bar":
            texts.add(f"the object {_pick(phrases, rng)}")
        out += [Referral(t, [o.obj_id]) for t in sorted(texts)]
    for (colour, shape), n in looks.items():
        if n > 1:
            ids = [o.obj_id for o in objs if (o.colour, o.shape) == (colour, shape)]
            out.append(Referral(f"the {'two' if n == 2 else 'three'} {colour} {shape}s", ids))
    for motion, n in motions.items():
        if n > 1 and motion != "still":
            out.append(Referral(f"the objects {PLURAL_MOTION[motion]}",
                                [o.obj_id for o in objs if o.motion == motion]))
    if no_target:  # MeViS v2: an expression whose object is not in the video
        absent = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in looks]
        colour, shape = absent[int(rng.integers(len(absent)))]
        out.append(Referral(f"the {colour} {shape}", []))
    return out
