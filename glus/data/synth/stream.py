"""Synthetic training clips drawn on demand: every sample is a new scene, never one of the written splits.

The written training split holds 256 videos (`make synth`), few enough that a model can learn which object each of
its 664 motion-only expressions refers to by heart: after the 8000-step motion stage, the `[SEG]` named the object
of 64 % of the training split's motion-only expressions and 12 % of valid_u's (docs/embedded_default.md). The
motion probe, whose scenes never repeat, learnt the same retrieval after ~50,000 scenes. This dataset gives a
training stage that regime: sample i is video i of the generator's "stream" split (its own seed salt, so no scene
of train, valid_u or valid comes back), drawn with the written data's JPEG round trip and cut into a clip exactly
as `ClipDataset` cuts a written video. Sample i is a pure function of (data_seed, seed, i).
"""
from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from glus.data.clips import ClipSpec, resize_masks
from glus.data.errors import DataError
from glus.data.samplers import query_frames, rng_for, train_context_frames
from glus.data.synth.temporal import make_temporal_video
from glus.data.synth.video import make_video
from glus.transforms import clip_geometry, clip_input, sam_input
from glus.vocabulary import DENSE_LABELS, dense_class

SPLIT = "mevis/stream"  # the split name the samples' ids carry (MeViS-like: the contrastive loss takes them)


def jpeg_round_trip(frame: np.ndarray, quality: int = 95) -> np.ndarray:
    """The frame as the written data stores it (`write_mevis_split`: JPEG, quality 95)."""
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
    with Image.open(buffer) as im:
        return np.asarray(im.convert("RGB"))


def objects_union(video, obj_ids, frames) -> np.ndarray:
    """bool (T, H, W): the given objects of a generated video in each frame (label maps hold obj_id + 1)."""
    ids = [o + 1 for o in obj_ids]
    return np.stack([np.isin(video.labels[f], ids) for f in frames])


class StreamedClipDataset(torch.utils.data.Dataset):
    """The items of `ClipDataset` (same keys, same sampling of frames and expressions) plus "captions": the
    referred objects in full, which the caption and grounded expression targets read."""

    def __init__(self, length: int, spec: ClipSpec, seed: int = 0, data_seed: int = 0,
                 first_kinds: tuple[str, ...] = (), temporal_rate: float = 0.0):
        """first_kinds: expressions of these kinds (glus.data.synth.language) are chosen before the others, so
        that a clip of up to `spec.max_expressions` holds every one its scene has (a stage that must learn
        motion-only retrieval gets ~3x the cases per clip); empty: chosen uniformly, as `ClipDataset` does.
        temporal_rate: the share of samples that are temporal scenes (`glus.data.synth.temporal`, the kinds in
        turn) instead of the generator's usual ones; which samples, a function of (seed, i)."""
        self.length, self.spec, self.seed, self.data_seed = length, spec, seed, data_seed
        self.first_kinds, self.temporal_rate = tuple(first_kinds), temporal_rate
        if spec.object_motions and spec.object_labels not in DENSE_LABELS:
            raise ValueError(f"data.init_args.clip.object_labels {spec.object_labels!r}: use one of "
                             f"{sorted(DENSE_LABELS)}")

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        video = self._video(i)
        rng = rng_for(self.seed, i)
        refs = [r for r in video.referrals if r.obj_ids]
        chosen = rng.choice(len(refs), size=min(self.spec.max_expressions, len(refs)), replace=False)
        if self.first_kinds:  # the uniform draw sets how many; a permutation sorted preferred-first says which
            order = rng.permutation(len(refs))
            chosen = sorted(order, key=lambda c: refs[c].kind not in self.first_kinds)[:len(chosen)]
        n = len(video.frames)
        ctx = train_context_frames(n, self.spec.num_context, rng)
        query = query_frames(n, self.spec.num_query, rng)
        frames = np.stack([jpeg_round_trip(video.frames[f]) for f in ctx + query])
        masks = torch.stack([torch.from_numpy(objects_union(video, refs[c].obj_ids, query)) for c in chosen])
        extra = self._object_masks(video, ctx + query) if self.spec.object_motions else {}
        return {**extra,
            "clip": clip_input(frames, self.spec.clip_size, self.spec.clip_resize),
            "sam": sam_input(frames[len(ctx):], self.spec.sam_size),
            "texts": [refs[c].text for c in chosen],
            "captions": [refs[c].caption for c in chosen],
            "masks": resize_masks(masks, self.spec.mask_size),
            "ids": [(SPLIT, video.vid, str(c), tuple(sorted(refs[c].obj_ids))) for c in chosen],
            "frames": query,
            "index": i,
        }

    def _video(self, i: int):
        if self.temporal_rate and rng_for(self.seed, i, 7).random() < self.temporal_rate:
            return make_temporal_video(self.data_seed, "stream", i)
        return make_video(self.data_seed, "stream", i)

    def _object_masks(self, video, frames: list[int]) -> dict:
        """As `ClipDataset._object_masks`, for every object of the scene (the still grey bar included)."""
        objects = video.scene.objects
        masks = np.stack([objects_union(video, [o.obj_id], frames) for o in objects], 1)  # (F, O, H, W)
        masks = clip_geometry(torch.from_numpy(masks).float(), self.spec.clip_size, self.spec.clip_resize)
        labels = [dense_class(self.spec.object_labels, o.colour, o.shape, o.motion) for o in objects]
        return {"object_masks": masks, "object_motions": torch.tensor(labels)}


class StreamedVOSClipDataset(torch.utils.data.Dataset):
    """Semi-supervised VOS clips (the items of `glus.data.vos_clips.VOSClipDataset`) of streamed scenes: sample i
    is video i of the generator's "stream" split, cut as VOSClipDataset cuts a written video (a stride in
    1..max_skip, up to max_objects of the objects visible on the first frame, its prompt). The objects are those
    the scene's expressions name, as a written video's. For the segmenter stage, which would otherwise see the
    same 256 videos for tens of epochs. Sample i is a pure function of (data_seed, seed, i)."""

    def __init__(self, length: int, spec, seed: int = 0, data_seed: int = 0, samples_per_step: int = 1):
        """samples_per_step: sample i belongs to optimiser step i // samples_per_step (the spec's schedule)."""
        self.length, self.spec, self.seed, self.data_seed = length, spec, seed, data_seed
        self.samples_per_step = samples_per_step

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        from glus.data.vos_clips import choose_objects, clip_frames, vos_item

        video = make_video(self.data_seed, "stream", i)
        rng = rng_for(self.seed, i)
        spec = self.spec.at_step(i // self.samples_per_step)
        named = sorted({o for r in video.referrals for o in r.obj_ids})
        for _ in range(spec.tries):
            frames = clip_frames(len(video.frames), spec, rng)
            visible = [o for o in named if (video.labels[frames[0]] == o + 1).any()]
            if visible:
                break
        else:
            raise DataError(f"streamed scene {i} (data seed {self.data_seed}): no named object visible on the "
                            f"first frame of {spec.tries} clips drawn", fix="raise clip.tries")
        objects = choose_objects(visible, spec, rng)
        masks = np.stack([objects_union(video, [o], frames) for o in objects])
        pixels = np.stack([jpeg_round_trip(video.frames[f]) for f in frames])
        return vos_item(pixels, masks, spec, rng_for(self.seed, i, 2), video=video.vid, frames=frames,
                        objects=[str(o) for o in objects], index=i)
