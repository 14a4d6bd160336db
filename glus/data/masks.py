"""Lazy, per-frame ground-truth masks for any split of the unified index.

An expression's target is the boolean union of its objects' masks (the published code summed them into uint8,
which overflows and breaks accuracy scores); an object absent from a frame contributes an empty mask.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from glus.data.errors import DataError
from glus.data.index import BINARY_PNG, NONE, PALETTE, RLE, Expression, SplitIndex


def decode_rle(rle, height: int, width: int, *, file=None, video=None, expression=None, frame=None) -> np.ndarray:
    """COCO RLE (compressed string or uncompressed list counts) -> bool (H, W); None -> empty mask."""
    where = dict(file=file, video=video, expression=expression, frame=frame)
    if rle is None:
        return np.zeros((height, width), dtype=bool)
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise DataError('mask must be a COCO RLE {"size": [h, w], "counts": ...} or null', **where)
    if list(rle["size"]) != [height, width]:
        raise DataError(f"RLE size {list(rle['size'])} differs from the frame size {[height, width]}", **where,
                        fix="the mask belongs to another video or was resized: regenerate mask_dict.json")
    try:
        if isinstance(rle["counts"], list):
            rle = mask_utils.frPyObjects(rle, height, width)
        decoded = mask_utils.decode(rle)
    except Exception as err:
        raise DataError(f"RLE does not decode ({err})", **where) from err
    return decoded.astype(bool)


@lru_cache(maxsize=4)
def _load_mask_dict(path: str) -> dict:
    # MeViS train's mask_dict.json is large: read it once per process, only when a mask is first needed.
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"mask file does not load ({err})", file=path) from err


def read_png(path: Path, height: int, width: int, video: str, frame: str) -> np.ndarray:
    if not path.is_file():
        raise DataError("annotation PNG is missing", file=path, video=video, frame=frame,
                        fix="re-extract the Annotations folder")
    try:
        with Image.open(path) as im:
            arr = np.array(im)
    except Exception as err:
        raise DataError(f"annotation PNG does not decode ({err})", file=path, video=video, frame=frame) from err
    if arr.shape[:2] != (height, width):
        raise DataError(f"annotation size {list(arr.shape[:2])} differs from the frame size {[height, width]}",
                        file=path, video=video, frame=frame)
    return arr if arr.ndim == 2 else arr[..., 0]


class MaskReader:
    """Decodes the ground truth of one split, one frame at a time."""

    def __init__(self, index: SplitIndex):
        self.index = index

    def object_mask(self, expr: Expression, obj, frame_idx: int) -> np.ndarray | None:
        """bool (H, W) of one object (anno id, palette index or object folder); None if the frame is unannotated."""
        video = self.index.videos[expr.video]
        frame = video.frames[frame_idx]
        h, w = video.height, video.width
        src = expr.mask
        if src.kind == RLE:
            masks = _load_mask_dict(src.path)
            if str(obj) not in masks:
                raise DataError(f"anno id {obj} is not in the mask file", file=src.path, video=expr.video,
                                expression=expr.exp_id, fix="use the mask_dict.json that matches the metadata")
            per_frame = masks[str(obj)]
            if not isinstance(per_frame, list) or len(per_frame) != len(video.frames):
                raise DataError(f"anno id {obj} has {len(per_frame) if isinstance(per_frame, list) else '?'} "
                                f"masks for {len(video.frames)} frames", file=src.path, video=expr.video,
                                expression=expr.exp_id)
            return decode_rle(per_frame[frame_idx], h, w, file=src.path, video=expr.video,
                              expression=expr.exp_id, frame=frame)
        if src.kind == PALETTE:
            return read_png(Path(src.path) / f"{frame}.png", h, w, expr.video, frame) == int(obj)
        if src.kind == BINARY_PNG:
            path = Path(src.path) / str(obj) / f"{frame}.png"
            return read_png(path, h, w, expr.video, frame) > 0 if path.is_file() else None
        raise DataError(f"split {self.index.name} has no ground truth", video=expr.video, expression=expr.exp_id,
                        fix="server splits are scored by the benchmark's server: use `glus submit`")

    def target(self, expr: Expression, frame_idx: int) -> np.ndarray | None:
        """bool (H, W): union of the expression's objects; None where the frame has no ground truth."""
        if expr.mask.kind == NONE:
            self.object_mask(expr, None, frame_idx)  # raises the "no ground truth" error
        video = self.index.videos[expr.video]
        out = np.zeros((video.height, video.width), dtype=bool)
        for obj in expr.mask.ids:
            m = self.object_mask(expr, obj, frame_idx)
            if m is None:
                return None
            out |= m
        return out

    def targets(self, expr: Expression, frame_ids) -> np.ndarray:
        """bool (T, H, W) for the given frames; raises if one of them is unannotated."""
        masks = [self.target(expr, i) for i in frame_ids]
        if any(m is None for m in masks):
            raise DataError("frame has no ground truth", video=expr.video, expression=expr.exp_id)
        return np.stack(masks)

    def annotated_frames(self, expr: Expression) -> list[int]:
        """Frames that carry ground truth: all of them except for ReasonVOS-style sparse annotation."""
        video = self.index.videos[expr.video]
        if expr.mask.kind != BINARY_PNG:
            return list(range(len(video.frames)))
        folder = Path(expr.mask.path) / str(expr.mask.ids[0])
        return [i for i, f in enumerate(video.frames) if (folder / f"{f}.png").is_file()]

    def foreground(self, video_id: str, frame_idx: int) -> np.ndarray:
        """ReVOS foreground mask (for the robustness score R), bool (H, W)."""
        path = self.index.extras.get("foreground")
        if not path:
            raise DataError("mask_dict_foreground.json not found", file=Path(self.index.root),
                            fix="download ReVOS' mask_dict_foreground.json: R needs it")
        video = self.index.videos[video_id]
        entry = _load_mask_dict(path).get(video_id)
        if not isinstance(entry, dict) or "masks_rle" not in entry:
            raise DataError('no "masks_rle" for the video', file=path, video=video_id)
        rle = entry["masks_rle"][frame_idx]
        rles = rle if isinstance(rle, list) else [rle]
        out = np.zeros((video.height, video.width), dtype=bool)
        for r in rles:
            out |= decode_rle(r, video.height, video.width, file=path, video=video_id, frame=video.frames[frame_idx])
        return out
