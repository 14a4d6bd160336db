"""Write synthetic videos in the official MeViS and Ref-YouTube-VOS layouts.

OUT/mevis/{train,valid_u}/{JPEGImages, meta_expressions.json, mask_dict.json}, OUT/mevis/valid (no masks: a
server-style split); OUT/refytvos/{train,valid}/{JPEGImages, Annotations}, OUT/refytvos/meta_expressions/
{train,valid,test}/meta_expressions.json, with the valid_u videos as refytvos valid (ground truth supplied) and
a few extra videos listed in both the valid and the test metadata, which readers must subtract.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from tqdm import tqdm

from glus.data.synth.language import APPEARANCE, LOOK_ALIKE, MOTION, PLURAL
from glus.data.synth.temporal import TEMPORAL_KINDS, make_temporal_video
from glus.data.synth.video import HEIGHT, WIDTH, SynthVideo, make_video
from glus.io import atomic_write_json

def palette() -> list[int]:
    """The DAVIS palette: index 0 black, then distinct colours by bit interleaving."""
    out = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out += [r, g, b]
    return out


def _write_frames(folder: Path, names: list[str], frames: list[np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in zip(names, frames):
        Image.fromarray(frame).save(folder / f"{name}.jpg", quality=95)


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def write_mevis_split(out: Path, split: str, videos: list[SynthVideo], with_masks: bool,
                      pixel_presence: bool = False) -> None:
    """pixel_presence: an object is absent (null) only where it is outside the frame and none of its pixels is
    drawn. Without it (generator 2, the written splits) absence is read off the geometry alone, which misses the
    one-pixel column a shape rounds onto the frame's edge as it leaves (kept so that those splits stay as they
    are; long videos, whose objects leave and come back hundreds of times, use it)."""
    folder = out / "mevis" / split
    meta, mask_dict, next_anno = {}, {}, 0
    for v in videos:
        names = [f"{t:05d}" for t in range(len(v.frames))]
        _write_frames(folder / "JPEGImages" / v.vid, names, v.frames)
        anno_of = {}
        for obj in v.scene.objects:
            anno_of[obj.obj_id] = next_anno
            mask_dict[str(next_anno)] = [
                _rle(label == obj.obj_id + 1)
                if obj.present(t, WIDTH, HEIGHT) or (pixel_presence and (label == obj.obj_id + 1).any())
                else None  # absent: null
                for t, label in enumerate(v.labels)]
            next_anno += 1
        exps = {}
        for k, ref in enumerate(v.referrals):
            # readers ignore "kind" and "caption" (the referred objects in full: glus.data.synth.language)
            exps[str(k)] = {"exp": ref.text, "obj_id": ref.obj_ids, "kind": ref.kind}
            if ref.caption:
                exps[str(k)]["caption"] = ref.caption
            if with_masks:
                exps[str(k)]["anno_id"] = [anno_of[o] for o in ref.obj_ids]
        meta[v.vid] = {"vid_id": v.vid, "frames": names, "expressions": exps}
    atomic_write_json(folder / "meta_expressions.json", {"videos": meta}, indent=None)
    if with_masks:
        atomic_write_json(folder / "mask_dict.json", mask_dict, indent=None)


def write_refytvos_split(out: Path, split: str, videos: list[SynthVideo], extra_test: list[SynthVideo]) -> None:
    """Single-object expressions only (Ref-YouTube-VOS has no multi-object ones); frames named every 5th."""
    root = out / "refytvos"
    pal = palette()
    meta = {}
    test_ids = {v.vid for v in extra_test}
    for v in videos + extra_test:
        names = [f"{5 * t:05d}" for t in range(len(v.frames))]
        _write_frames(root / split / "JPEGImages" / v.vid, names, v.frames)
        exps = {str(k): {"exp": r.text, "obj_id": str(r.obj_ids[0] + 1)}
                for k, r in enumerate(x for x in v.referrals if len(x.obj_ids) == 1)}
        meta[v.vid] = {"expressions": exps, "frames": names}
        if v.vid in test_ids:
            continue  # test videos carry no ground truth
        ann = root / split / "Annotations" / v.vid
        ann.mkdir(parents=True, exist_ok=True)
        for name, label in zip(names, v.labels):
            im = Image.frombytes("P", (label.shape[1], label.shape[0]), label.tobytes())
            im.putpalette(pal)
            im.save(ann / f"{name}.png")
    atomic_write_json(root / "meta_expressions" / split / "meta_expressions.json", {"videos": meta}, indent=None)
    if extra_test:
        test_meta = {v.vid: meta[v.vid] for v in extra_test}
        atomic_write_json(root / "meta_expressions" / "test" / "meta_expressions.json", {"videos": test_meta},
                          indent=None)


# The kinds a balanced valid_u counts (absent expressions, MeViS v2's no-target, are left as they come).
BALANCED_KINDS = (APPEARANCE, LOOK_ALIKE, MOTION, PLURAL)


def balanced_videos(seed: int, per_kind: int, no_target_rate: float = 0.0, max_videos: int = 10_000):
    """valid_u videos, in order, until every kind of BALANCED_KINDS has `per_kind` expressions: a kind's
    expressions past its quota are left out (a video left without any is skipped), so that a per-kind J&F rests
    on `per_kind` cases whatever the kinds' natural frequencies (plural ones are the rarest)."""
    counts = dict.fromkeys(BALANCED_KINDS, 0)
    out = []
    for i in range(max_videos):
        if min(counts.values()) >= per_kind:
            return out
        video = make_video(seed, "valid_u", i, no_target_rate)
        kept = []
        for ref in video.referrals:
            if ref.kind not in counts or counts[ref.kind] < per_kind:
                kept.append(ref)
                if ref.kind in counts:
                    counts[ref.kind] += 1
        if any(ref.kind in counts for ref in kept):
            video.referrals = kept
            out.append(video)
    raise ValueError(f"{max_videos} videos did not give {per_kind} expressions of each kind: {counts}")


def write_synthetic(out: str | Path, seed: int = 0, videos: int = 32, no_target_rate: float = 0.0,
                    progress: bool = True, valid_per_kind: int | None = None, temporal_per_kind: int = 0,
                    temporal_videos: int = 0) -> dict:
    """Write the synthetic dataset; returns the number of videos per split. valid_u has a quarter as many
    videos as train, or, with `valid_per_kind`, that many expressions of each kind (`balanced_videos`).
    temporal_per_kind: valid_u also holds that many expressions of each temporal kind (`glus.data.synth.temporal`:
    one per video, after the other videos); temporal_videos: train also holds that many temporal videos (the kinds
    in turn). The other videos are the same with or without them."""
    out = Path(out)
    counts = {"train": videos, "valid_u": max(4, videos // 4), "valid": max(2, videos // 8), "test": 2}
    made = {}
    bar = tqdm(total=sum(counts.values()), desc="synthetic videos", disable=not progress)
    for split, n in counts.items():
        if split == "valid_u" and valid_per_kind:
            made[split] = balanced_videos(seed, valid_per_kind, no_target_rate)
            bar.update(n)
            continue
        made[split] = []
        for i in range(n):
            made[split].append(make_video(seed, split, i, no_target_rate))
            bar.update()
    bar.close()
    made["train"] += [make_temporal_video(seed, "train", i) for i in range(temporal_videos)]
    made["valid_u"] += [make_temporal_video(seed, "valid_u", i)
                        for i in range(temporal_per_kind * len(TEMPORAL_KINDS))]
    write_mevis_split(out, "train", made["train"], with_masks=True)
    write_mevis_split(out, "valid_u", made["valid_u"], with_masks=True)
    write_mevis_split(out, "valid", made["valid"], with_masks=False)
    write_refytvos_split(out, "train", made["train"], [])
    write_refytvos_split(out, "valid", made["valid_u"], made["test"])
    return {k: len(v) for k, v in made.items()}
