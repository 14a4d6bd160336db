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
from glus.vocabulary import MOTION_PHRASES, PLURAL_MOTION

# What tells the referred objects apart; the MeViS-layout metadata carries it as each expression's "kind", so
# that a run can report J&F per kind (`SplitIndex.kinds`).
APPEARANCE = "appearance"  # colour and shape suffice (motion words, if any, are redundant)
LOOK_ALIKE = "look-alike"  # another object has the same colour and shape: only the motion separates them
MOTION = "motion"          # "the object that stops": motion alone
PLURAL = "plural"          # several objects
ABSENT = "absent"          # no object of the video (MeViS v2 no-target)


@dataclass
class Referral:
    text: str
    obj_ids: list[int]
    kind: str = APPEARANCE
    caption: str = ""   # what the referred objects are, in full: colour, shape and motion of each


def caption(o) -> str:
    """An object in full: "the red circle moving left" (its motion's first phrase)."""
    return f"the {o.colour} {o.shape} {MOTION_PHRASES[o.motion][0]}"


def caption_motion(text: str) -> str | None:
    """The motion of a one-object caption ("the red circle moving left" -> "left"); None for a caption of
    several objects or one that `caption` did not write."""
    if " and " in text:
        return None
    return next((m for m, phrases in MOTION_PHRASES.items() if text.endswith(" " + phrases[0])), None)


def _pick(options, rng: np.random.Generator) -> str:
    return str(options[int(rng.integers(len(options)))])


# Motions that also move the object one way across the frame: "the object moving left" fits a speeding, stopping,
# entering or leaving object that goes left as well as the one whose motion is "left".
TRAVELLING = ("speeding", "stopping", "entering", "leaving")


def fitting_motions(o) -> set[str]:
    """Every motion whose phrases describe the object truthfully: its own, and for a travelling motion the
    direction it goes ("left" or "right": these motions are horizontal)."""
    if o.motion not in TRAVELLING:
        return {o.motion}
    return {o.motion, "left" if o.centres[-1][0] < o.centres[0][0] else "right"}


def describe(scene: Scene, rng: np.random.Generator, no_target: bool = False) -> list[Referral]:
    """Every expression refers to exactly the objects its words fit: a motion phrase counts every object it
    describes truthfully (`fitting_motions`), so "the object moving left" is not written where a speeding
    object also goes left, nor "the red circle moving left" where its look-alike does."""
    objs = scene.objects
    looks = Counter((o.colour, o.shape) for o in objs)
    fits = {o.obj_id: fitting_motions(o) for o in objs}
    motions = Counter(m for o in objs for m in fits[o.obj_id])
    out: list[Referral] = []
    for o in objs:
        name = f"{o.colour} {o.shape}"
        texts = {}
        unique_look = looks[(o.colour, o.shape)] == 1
        if unique_look:
            texts[_pick((f"the {name}", f"the {o.shape} that is {o.colour}", f"{name}"), rng)] = APPEARANCE
        phrases = MOTION_PHRASES[o.motion]
        told_apart = unique_look or not any(o.motion in fits[x.obj_id] for x in objs
                                            if x is not o and (x.colour, x.shape) == (o.colour, o.shape))
        for phrase in rng.choice(phrases, size=2, replace=False):
            if told_apart:
                texts[f"the {name} {phrase}"] = APPEARANCE if unique_look else LOOK_ALIKE
        if motions[o.motion] == 1 and o.shape != "bar":
            texts[f"the object {_pick(phrases, rng)}"] = MOTION
        out += [Referral(t, [o.obj_id], texts[t], caption(o)) for t in sorted(texts)]
    for (colour, shape), n in looks.items():
        if n > 1:
            ids = [o.obj_id for o in objs if (o.colour, o.shape) == (colour, shape)]
            out.append(Referral(f"the {'two' if n == 2 else 'three'} {colour} {shape}s", ids, PLURAL,
                                _captions(objs, ids)))
    for motion, n in motions.items():
        if n > 1 and motion != "still":
            ids = [o.obj_id for o in objs if motion in fits[o.obj_id]]
            out.append(Referral(f"the objects {PLURAL_MOTION[motion]}", ids, PLURAL, _captions(objs, ids)))
    if no_target:  # MeViS v2: an expression whose object is not in the video
        absent = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in looks]
        colour, shape = absent[int(rng.integers(len(absent)))]
        out.append(Referral(f"the {colour} {shape}", [], ABSENT))
    return out


def _captions(objs, ids: list[int]) -> str:
    return " and ".join(caption(o) for o in objs if o.obj_id in ids)
