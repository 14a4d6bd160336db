"""Training clips: dataset mixing by weight, up to N expressions per video, context + query frames.

Sample i is a pure function of (seed, i): any worker, any resume, the same clip.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from glus.data.frames import load_frames
from glus.data.errors import DataError
from glus.data.index import SplitIndex
from glus.data.masks import MaskReader
from glus.data.samplers import query_frames, rng_for, train_context_frames
from glus.transforms import clip_geometry, clip_input, sam_input


@dataclass
class ClipSpec:
    num_context: int = 4
    num_query: int = 4
    max_expressions: int = 3
    clip_size: int = 224
    clip_resize: str = "crop"     # as the model's VisionLanguageConfig.clip_resize (recipes link the two)
    sam_size: int = 1024
    mask_size: int | None = None  # longest side of the supervised masks; None: the original size
    # ours, for the dense motion target (loss_weights.motion): every captioned object's mask in each CLIP frame,
    # at CLIP's geometry, with its motion class; synthetic data only (its captions name each object's motion)
    object_motions: bool = False
    # what each object's class names: "motion" (its motion, 9 classes) or "object" (colour, shape and motion:
    # the tokens then carry all the LLM must read to name a referred object)
    object_labels: str = "motion"


class ClipDataset(torch.utils.data.Dataset):
    def __init__(self, splits: list[SplitIndex], weights: list[float], length: int, spec: ClipSpec, seed: int = 0):
        if len(splits) != len(weights) or not splits:
            raise ValueError("give one weight per split")
        self.splits, self.spec, self.seed, self.length = splits, spec, seed, length
        self.readers = [MaskReader(s) for s in splits]
        self.probs = np.asarray(weights, float) / np.sum(weights)
        # videos that have at least one expression with ground truth (GLUS: videos with >= 4 frames are preferred
        # but shorter ones are padded by the query sampler rather than dropped)
        self.by_video = [s.by_video() for s in splits]
        self.videos = [sorted(v for v, exprs in groups.items() if any(e.mask.kind != "none" for e in exprs))
                       for groups in self.by_video]
        for split, vids in zip(splits, self.videos):
            if not vids:
                raise DataError(f"split {split.name} has no expression with ground truth", file=split.root)
        self.motions = [object_motions(s, spec.object_labels) for s in splits] if spec.object_motions else None

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        rng = rng_for(self.seed, i)
        k = int(rng.choice(len(self.splits), p=self.probs))
        split, reader = self.splits[k], self.readers[k]
        vid = self.videos[k][int(rng.integers(len(self.videos[k])))]
        video = split.videos[vid]
        exprs = self.by_video[k][vid]
        chosen = rng.choice(len(exprs), size=min(self.spec.max_expressions, len(exprs)), replace=False)
        n = len(video.frames)
        ctx = train_context_frames(n, self.spec.num_context, rng)
        query = query_frames(n, self.spec.num_query, rng)
        frames = load_frames(video, sorted(set(ctx + query)))
        lookup = {f: j for j, f in enumerate(sorted(set(ctx + query)))}
        masks = [torch.from_numpy(reader.targets(exprs[c], query)) for c in chosen]
        masks = self._resize_masks(torch.stack(masks))
        extra = self._object_masks(k, vid, ctx + query) if self.motions else {}
        return {**extra,
            "clip": clip_input(frames[[lookup[f] for f in ctx + query]], self.spec.clip_size, self.spec.clip_resize),
            "sam": sam_input(frames[[lookup[f] for f in query]], self.spec.sam_size),
            "texts": [exprs[c].text for c in chosen],
            "masks": masks,
            "ids": [(split.name, vid, exprs[c].exp_id, tuple(sorted(exprs[c].obj_ids))) for c in chosen],
            "frames": query,
            "index": i,
        }

    def _object_masks(self, k: int, vid: str, frames: list[int]) -> dict:
        """object_masks (F, O, S, S) float, the share of each CLIP pixel each object covers in the clip's frames
        (context then query), and object_motions (O,) their motion classes."""
        objects = self.motions[k].get(vid, [])
        size = self.spec.clip_size
        if not objects:
            return {"object_masks": torch.zeros(len(frames), 0, size, size), "object_motions": torch.zeros(0).long()}
        masks = np.stack([self.readers[k].targets(expr, frames) for expr, _ in objects], 1)  # (F, O, H, W)
        masks = clip_geometry(torch.from_numpy(masks).float(), size, self.spec.clip_resize)
        return {"object_masks": masks, "object_motions": torch.tensor([m for _, m in objects])}

    def _resize_masks(self, masks_EQHW: torch.Tensor) -> torch.Tensor:
        return resize_masks(masks_EQHW, self.spec.mask_size)


def resize_masks(masks_EQHW: torch.Tensor, size: int | None) -> torch.Tensor:
    """Supervised masks at `ClipSpec.mask_size` (longest side; None or smaller masks: as they are)."""
    h, w = masks_EQHW.shape[-2:]
    if size is None or max(h, w) <= size:
        return masks_EQHW
    scale = size / max(h, w)
    out = torch.nn.functional.interpolate(masks_EQHW.float(), size=(round(h * scale), round(w * scale)),
                                          mode="nearest")
    return out > 0.5


def object_motions(split: SplitIndex, labels: str = "motion") -> dict[str, list[tuple]]:
    """{video: [(a one-object expression of each captioned object, its class index)]} from the split's captions
    (synthetic data); a DataError where the split has none. labels: "motion" (`MOTION_CLASSES`) or "object"
    (`OBJECT_CLASSES`: colour, shape and motion)."""
    from glus.data.synth.language import caption_motion
    from glus.vocabulary import DENSE_LABELS, dense_class

    if labels not in DENSE_LABELS:
        raise ValueError(f"data.init_args.clip.object_labels {labels!r}: use one of {sorted(DENSE_LABELS)}")
    captions = split.captions()
    out: dict[str, dict[str, tuple]] = {}
    for e in split.expressions:
        text = captions.get((e.video, e.exp_id), "")
        motion = caption_motion(text)
        if motion is not None and len(e.obj_ids) == 1:
            colour, shape = text.split()[1:3]  # "the red circle ..."
            out.setdefault(e.video, {}).setdefault(e.obj_ids[0], (e, dense_class(labels, colour, shape, motion)))
    if not out:
        raise DataError(f"split {split.name} has no one-object captions to read motions from",
                        file=f"{split.root}/{split.name.split('/')[-1]}/meta_expressions.json",
                        fix="regenerate the synthetic data with `glus data synth`, or set data.init_args.clip."
                            "object_motions: false (and loss_weights.motion: 0)")
    return {vid: list(objs.values()) for vid, objs in out.items()}


def collate_clips(items: list[dict]) -> dict:
    """Videos stacked; expressions flattened with the index of their video; masks kept per expression (videos
    of one batch may differ in size); object masks and motions, where asked for, kept per video."""
    extra = {k: [it[k] for it in items] for k in ("object_masks", "object_motions") if k in items[0]}
    if "captions" in items[0]:  # streamed synthetic clips carry their captions (glus.data.synth.stream)
        extra["captions"] = [c for it in items for c in it["captions"]]
    return {**extra,
        "clip": torch.stack([it["clip"] for it in items]),
        "sam": torch.stack([it["sam"] for it in items]),
        "texts": [t for it in items for t in it["texts"]],
        "video_index": torch.tensor([v for v, it in enumerate(items) for _ in it["texts"]]),
        "masks": [m for it in items for m in it["masks"]],
        "ids": [x for it in items for x in it["ids"]],
        "index": [it["index"] for it in items for _ in it["texts"]],
        "frames": [it["frames"] for it in items for _ in it["texts"]],  # query frame ids, per expression
    }
