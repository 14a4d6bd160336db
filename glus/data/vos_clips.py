"""Semi-supervised VOS clips for the plain VOS path: T frames of one video and the masks of its objects.

An object is an annotated instance of the video (an anno id, a palette index), whichever expressions name it.
A clip starts on a frame where at least one object is visible; the objects visible there (up to
`max_objects`) are the clip's, as a VOS benchmark gives the first frame's objects. Frames follow each other
with a stride drawn in 1..max_skip (VOS training's usual temporal augmentation). Sample i is a pure function
of (seed, i), as every dataset of glus.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from glus.data.clips import load_frames
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
    def __init__(self, split: SplitIndex, length: int, spec: VOSClipSpec, seed: int = 0):
        self.split, self.length, self.spec, self.seed = split, length, spec, seed
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

    def draw(self, i: int) -> tuple[str, list[int], list[tuple]]:
        """(video, frames, objects) of sample i."""
        rng = rng_for(self.seed, i)
        spec = self.spec
        for _ in range(spec.tries):
            vid = self.videos[int(rng.integers(len(self.videos)))]
            n = len(self.split.videos[vid].frames)
            skip = int(rng.integers(1, spec.max_skip + 1))
            span = min((spec.num_frames - 1) * skip + 1, n)
            start = int(rng.integers(n - span + 1))
            frames = [min(start + k * skip, n - 1) for k in range(spec.num_frames)]  # short videos repeat the end
            objects = self.objects[vid]
            visible = [obj for obj, m in zip(objects, self._masks(vid, objects, frames[:1])) if m[0].any()]
            if visible:
                chosen = rng.choice(len(visible), size=min(spec.max_objects, len(visible)), replace=False)
                return vid, frames, [visible[int(c)] for c in sorted(chosen)]
        raise DataError(f"sample {i}: no object visible on the first frame of {spec.tries} clips drawn",
                        file=self.split.root, fix="check the split's masks (glus data check)")

    def __getitem__(self, i: int) -> dict:
        vid, frames, objects = self.draw(i)
        video = self.split.videos[vid]
        pixels = load_frames(video, frames)
        masks = torch.from_numpy(self._masks(vid, objects, frames))
        return {"sam": sam_input(pixels, self.spec.sam_size), "masks": masks, "video": vid, "frames": frames,
                "objects": [str(o) for _, o in objects], "index": i}


def collate_vos(items: list[dict]) -> list[dict]:
    """Clips stay separate: their object counts and frame sizes differ."""
    return items
