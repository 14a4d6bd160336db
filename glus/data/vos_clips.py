"""Semi-supervised VOS clips for the plain VOS path: T frames of one video and the masks of its objects.

An object is an annotated instance of the video (an anno id, a palette index), whichever expressions name it.
A clip starts on a frame where at least one object is visible; the objects visible there (up to
`max_objects`) are the clip's, as a VOS benchmark gives the first frame's objects. Frames follow each other
with a stride drawn in 1..max_skip (VOS training's usual temporal augmentation). Sample i is a pure function
of (seed, i), as every dataset of glus.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from glus.data.frames import load_frames
from glus.data.errors import DataError
from glus.data.index import NONE, Expression, SplitIndex
from glus.data.masks import MaskReader
from glus.data.samplers import rng_for
from glus.transforms import sam_input


@dataclass
class VOSClipSpec:
    num_frames: int = 8
    max_objects: int = 3
    max_skip: int = 1
    sam_size: int = 1024
    tries: int = 8   # start frames tried before a video counts as having no visible object
    # How the first frame is given, as SAM-2 trains (its mask, clicks or a box), with these probabilities; clicks
    # and boxes make the decoder promptable, which GLUS' [SEG] prompts need. None: always the mask.
    prompts: dict | None = None
    max_clicks: int = 3
    box_noise: float = 0.1   # box corners move by up to this fraction of the box's side
    # A curriculum: [{from_step: S, field: value, ...}, ...]; from optimiser step S on, these fields (num_frames,
    # max_skip, max_objects, prompts) replace the ones above. A tiny SAM-2 trained from scratch on long clips
    # segments every object and never learns to track; on 2-frame clips it learns to within a thousand steps.
    schedule: list | None = None

    def __post_init__(self):
        if self.prompts is not None:
            unknown = sorted(set(self.prompts) - set(PROMPT_KINDS))
            if unknown or not sum(self.prompts.values()) > 0 or min(self.prompts.values()) < 0:
                raise DataError(f"clip.prompts {self.prompts}: kinds are {list(PROMPT_KINDS)} with probabilities "
                                ">= 0 that do not all vanish", fix="e.g. {mask: 0.2, clicks: 0.4, box: 0.4}")
        if self.schedule:  # in step order, once: at_step runs for every sample
            self.schedule = sorted(self.schedule, key=lambda e: e.get("from_step", 0))
        for entry in self.schedule or []:
            unknown = sorted(set(entry) - {"from_step", *SCHEDULED})
            if unknown or not isinstance(entry.get("from_step"), int):
                raise DataError(f"clip.schedule entry {entry}: each needs from_step (an optimiser step) and may set "
                                f"{list(SCHEDULED)}", fix="e.g. [{from_step: 0, num_frames: 2}, {from_step: 1500, "
                                "num_frames: 8}]")

    def at_step(self, step: int) -> "VOSClipSpec":
        """The spec in force at optimiser step `step`: the schedule's entries up to it applied in order."""
        changes = {}
        for entry in self.schedule or []:
            if entry["from_step"] <= step:
                changes.update({k: v for k, v in entry.items() if k != "from_step"})
        if not changes:
            return self
        spec = replace(self, **changes, schedule=None)
        spec.__post_init__()
        return spec


PROMPT_KINDS = ("mask", "clicks", "box")
SCHEDULED = ("num_frames", "max_skip", "max_objects", "prompts")


def video_objects(exprs: list[Expression]) -> list[tuple[Expression, object]]:
    """(an expression that names it, object id) for each distinct object of a video, in a fixed order."""
    seen: dict[str, tuple[Expression, object]] = {}
    for e in exprs:
        if e.mask.kind == NONE:
            continue
        for obj in e.mask.ids:
            seen.setdefault(str(obj), (e, obj))
    return [seen[k] for k in sorted(seen)]


class VOSClipDataset(torch.utils.data.Dataset):
    def __init__(self, split: SplitIndex, length: int, spec: VOSClipSpec, seed: int = 0, samples_per_step: int = 1):
        """samples_per_step: sample i belongs to optimiser step i // samples_per_step (the spec's schedule)."""
        self.split, self.length, self.spec, self.seed = split, length, spec, seed
        self.samples_per_step = samples_per_step
        self.reader = MaskReader(split)
        groups = split.by_video()
        self.objects = {v: video_objects(groups[v]) for v in sorted(groups)}
        self.videos = [v for v, objs in self.objects.items() if objs]
        if not self.videos:
            raise DataError(f"split {split.name} has no annotated object", file=split.root)

    def __len__(self) -> int:
        return self.length

    def _masks(self, vid: str, objects, frames: list[int]) -> np.ndarray:
        return np.stack([np.stack([self.reader.object_mask(e, o, f) for f in frames]) for e, o in objects])

    def draw(self, i: int) -> tuple[str, list[int], list[tuple], VOSClipSpec]:
        """(video, frames, objects, the clip spec in force) of sample i."""
        rng = rng_for(self.seed, i)
        spec = self.spec.at_step(i // self.samples_per_step)
        for _ in range(spec.tries):
            vid = self.videos[int(rng.integers(len(self.videos)))]
            frames = clip_frames(len(self.split.videos[vid].frames), spec, rng)
            objects = self.objects[vid]
            visible = [obj for obj, m in zip(objects, self._masks(vid, objects, frames[:1])) if m[0].any()]
            if visible:
                return vid, frames, choose_objects(visible, spec, rng), spec
        raise DataError(f"sample {i}: no object visible on the first frame of {spec.tries} clips drawn",
                        file=self.split.root, fix="check the split's masks (glus data check)")

    def __getitem__(self, i: int) -> dict:
        vid, frames, objects, spec = self.draw(i)
        pixels = load_frames(self.split.videos[vid], frames)
        masks = self._masks(vid, objects, frames)
        return vos_item(pixels, masks, spec, rng_for(self.seed, i, 2), video=vid, frames=frames,
                        objects=[str(o) for _, o in objects], index=i)


def clip_frames(num_frames: int, spec: VOSClipSpec, rng: np.random.Generator) -> list[int]:
    """spec.num_frames frames of a video of `num_frames`, a stride in 1..max_skip apart; a video shorter than
    the clip repeats its last frame."""
    skip = int(rng.integers(1, spec.max_skip + 1))
    span = min((spec.num_frames - 1) * skip + 1, num_frames)
    start = int(rng.integers(num_frames - span + 1))
    return [min(start + k * skip, num_frames - 1) for k in range(spec.num_frames)]


def choose_objects(visible: list, spec: VOSClipSpec, rng: np.random.Generator) -> list:
    """Up to spec.max_objects of the objects visible on a clip's first frame, in their given order."""
    chosen = rng.choice(len(visible), size=min(spec.max_objects, len(visible)), replace=False)
    return [visible[int(c)] for c in sorted(chosen)]


def vos_item(pixels_THWC: np.ndarray, masks_NTHW: np.ndarray, spec: VOSClipSpec, prompt_rng: np.random.Generator,
             **about) -> dict:
    """A training sample: SAM-2 inputs, the objects' masks, the first frame's prompt when spec.prompts asks
    for one, and `about` (video, frames, objects, index: for logs and tests)."""
    item = {"sam": sam_input(pixels_THWC, spec.sam_size), "masks": torch.from_numpy(masks_NTHW), **about}
    if spec.prompts:
        item["points"] = first_frame_prompt(masks_NTHW[:, 0], spec, prompt_rng)
    return item


def first_frame_prompt(masks_NHW: np.ndarray, spec: VOSClipSpec, rng: np.random.Generator):
    """None (the first frame's masks are given), or (coords (N, P, 2) float in SAM-2 input pixels, labels (N, P)
    int) in SAM-2's point convention: clicks drawn uniformly inside each object (label 1), or each object's box
    with jittered corners (labels 2, 3). One kind per clip, so that its objects batch."""
    kinds = list(spec.prompts)
    weights = np.array([spec.prompts[k] for k in kinds], dtype=float)
    kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
    if kind == "mask":
        return None
    n, h, w = masks_NHW.shape
    scale = np.array([spec.sam_size / w, spec.sam_size / h])
    clicks = int(rng.integers(1, spec.max_clicks + 1))
    coords, labels = [], []
    for mask in masks_NHW:
        ys, xs = np.nonzero(mask)
        if kind == "clicks":
            pick = rng.integers(len(xs), size=clicks)
            coords.append(np.stack([xs[pick], ys[pick]], 1))
            labels.append([1] * clicks)
        else:
            box = np.array([[xs.min(), ys.min()], [xs.max() + 1, ys.max() + 1]], dtype=float)
            side = box[1] - box[0]
            coords.append((box + rng.uniform(-1, 1, (2, 2)) * spec.box_noise * side).clip(0, [w, h]))
            labels.append([2, 3])
    return (torch.from_numpy((np.stack(coords) * scale).astype(np.float32)),
            torch.tensor(labels, dtype=torch.int32))


def collate_vos(items: list[dict]) -> list[dict]:
    """Clips stay separate: their object counts and frame sizes differ."""
    return items
