"""Pieces shared by the format readers: JSON loading and the MeViS-style metadata parser."""
from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from glus.data.errors import DataError, ProblemLog
from glus.data.index import NONE, RLE, Expression, MaskSource, Video


def load_json(path: Path, what: str, fix: str) -> dict:
    if not path.is_file():
        raise DataError(f"{what} not found", file=path, fix=fix)
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise DataError(f"{what} is not valid JSON ({err})", file=path, fix="re-download or re-extract it") from err


def videos_of(meta: dict, path: Path) -> dict:
    videos = meta.get("videos") if isinstance(meta, dict) else None
    if not isinstance(videos, dict):
        raise DataError('top level must be {"videos": {video_id: {...}}}', file=path,
                        fix="point --root at the official files, unmodified")
    return videos


def frame_size(frame_file: Path, video: str) -> tuple[int, int]:
    """(height, width) from the image header; the pixels are not decoded here."""
    if not frame_file.is_file():
        raise DataError("frame file is missing", file=frame_file, video=video,
                        fix="re-extract JPEGImages or remove the frame from the metadata")
    try:
        with Image.open(frame_file) as im:
            return im.height, im.width
    except Exception as err:
        raise DataError(f"frame does not open as an image ({err})", file=frame_file, video=video,
                        fix="re-extract JPEGImages") from err


def clean_text(text, path: Path, vid: str, eid: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise DataError("empty expression text", file=path, video=vid, expression=eid,
                        fix="remove the expression or give it a text")
    return text.strip()


def make_video(vid: str, entry: dict, frame_root: Path, path: Path, ext: str = ".jpg") -> Video:
    frames = entry.get("frames") if isinstance(entry, dict) else None
    if not isinstance(frames, list) or not frames or not all(isinstance(f, str) for f in frames):
        raise DataError('"frames" must be a non-empty list of frame names', file=path, video=vid,
                        fix="check that the metadata matches the format given by --format")
    frame_dir = frame_root / vid
    height, width = frame_size(frame_dir / f"{frames[0]}{ext}", vid)
    return Video(id=vid, frames=list(frames), frame_dir=str(frame_dir), height=height, width=width, ext=ext)


def parse_mevis_style(meta_file: Path, frame_root: Path, mask_file: Path | None, log: ProblemLog,
                      with_type: bool = False) -> tuple[dict[str, Video], list[Expression]]:
    """MeViS, ReVOS and LV-VIS (converted) share this metadata: exp, obj_id, anno_id (+ type_id)."""
    meta = load_json(meta_file, "meta_expressions.json", "download the split's metadata into this folder")
    videos: dict[str, Video] = {}
    expressions: list[Expression] = []
    for vid, entry in videos_of(meta, meta_file).items():
        try:
            videos[vid] = make_video(vid, entry, frame_root, meta_file)
        except DataError as err:
            log.report(err)
            continue
        exps = entry.get("expressions")
        if not isinstance(exps, dict):
            log.report(DataError('"expressions" must be a dict {exp_id: {...}}', file=meta_file, video=vid))
            continue
        for eid, exp in exps.items():
            try:
                expressions.append(_mevis_expression(vid, str(eid), exp, meta_file, mask_file, with_type))
            except DataError as err:
                log.report(err)
    return videos, expressions


def _mevis_expression(vid, eid, exp, meta_file, mask_file, with_type) -> Expression:
    if not isinstance(exp, dict):
        raise DataError("expression entry must be a dict", file=meta_file, video=vid, expression=eid)
    text = clean_text(exp.get("exp"), meta_file, vid, eid)
    obj_ids = exp.get("obj_id", [])
    obj_ids = [str(o) for o in (obj_ids if isinstance(obj_ids, list) else [obj_ids])]
    if mask_file is None:
        source = MaskSource(NONE)
    else:
        anno = exp.get("anno_id")
        if not isinstance(anno, list) or not all(isinstance(a, (int, str)) and str(a).lstrip("-").isdigit()
                                                  for a in anno):
            raise DataError('"anno_id" must be a list of integer ids', file=meta_file, video=vid, expression=eid,
                            fix="use the metadata file that belongs to this mask_dict.json")
        source = MaskSource(RLE, str(mask_file), tuple(int(a) for a in anno))
    type_id = None
    if with_type:
        type_id = exp.get("type_id")
        if type_id not in (0, 1, 2):
            raise DataError(f'"type_id" must be 0, 1 or 2, got {type_id!r}', file=meta_file, video=vid,
                            expression=eid)
    return Expression(video=vid, exp_id=eid, text=text, obj_ids=obj_ids, mask=source, type_id=type_id,
                      kind=_text_field(exp, "kind", meta_file, vid, eid),
                      caption=_text_field(exp, "caption", meta_file, vid, eid))


def _text_field(exp: dict, field: str, meta_file, vid, eid) -> str:
    """An optional text field of an expression (the synthetic data's kind and caption); "" where absent."""
    value = exp.get(field, "")
    if not isinstance(value, str):
        raise DataError(f'"{field}" must be a string, got {value!r}', file=meta_file, video=vid, expression=eid,
                        fix=f'write "{field}" as text or leave it out (only synthetic data carries it)')
    return value
