"""Ref-YouTube-VOS and Ref-DAVIS-17 (converted to the same layout).

ROOT/meta_expressions/<split>/meta_expressions.json, ROOT/<split>/JPEGImages/<video>/<frame>.jpg and, where
ground truth exists, ROOT/<split>/Annotations/<video>/<frame>.png (palette: pixel value = object id).
Ref-YouTube-VOS valid is the valid metadata minus the videos of the test metadata (202 videos).
"""
from __future__ import annotations

from pathlib import Path

from glus.data.errors import DataError, ProblemLog
from glus.data.formats.common import clean_text, load_json, make_video, videos_of
from glus.data.index import NONE, PALETTE, Expression, MaskSource, SplitIndex

SPLITS = ("train", "valid")


def meta_file(root: Path, split: str) -> Path:
    return root / "meta_expressions" / split / "meta_expressions.json"


def read(root: Path, split: str, log: ProblemLog, name: str, subtract_test: bool = True) -> SplitIndex:
    path = meta_file(root, split)
    entries = videos_of(load_json(path, "meta_expressions.json", "download the metadata of this split"), path)
    if split == "valid" and subtract_test:
        test = meta_file(root, "test")
        test_ids = set(videos_of(load_json(test, "test meta_expressions.json",
                                           "download meta_expressions/test: valid = valid minus test"), test))
        entries = {k: v for k, v in entries.items() if k not in test_ids}
    anno_root = root / split / "Annotations"
    index = SplitIndex(name=name, root=str(root))
    for vid, entry in entries.items():
        try:
            index.videos[vid] = make_video(vid, entry, root / split / "JPEGImages", path)
            index.expressions += _expressions(vid, entry, path, anno_root)
        except DataError as err:
            index.videos.pop(vid, None)
            log.report(err)
    return index


def _expressions(vid: str, entry: dict, path: Path, anno_root: Path) -> list[Expression]:
    exps = entry.get("expressions")
    if not isinstance(exps, dict):
        raise DataError('"expressions" must be a dict {exp_id: {"exp", "obj_id"}}', file=path, video=vid)
    has_gt = anno_root.is_dir()
    if has_gt and not (anno_root / vid).is_dir():
        raise DataError("annotation folder is missing", file=anno_root / vid, video=vid,
                        fix="re-extract Annotations for this split")
    out = []
    for eid, exp in exps.items():
        text = clean_text(exp.get("exp") if isinstance(exp, dict) else None, path, vid, eid)
        obj = str(exp.get("obj_id", ""))
        if not obj.isdigit() or not 0 < int(obj) < 256:
            raise DataError(f'"obj_id" must be a palette index 1..255 as a string, got {obj!r}', file=path,
                            video=vid, expression=eid)
        source = MaskSource(PALETTE, str(anno_root / vid), (int(obj),)) if has_gt else MaskSource(NONE)
        out.append(Expression(video=vid, exp_id=str(eid), text=text, obj_ids=[obj], mask=source))
    return out


def present_splits(root: Path) -> list[str]:
    return [s for s in SPLITS if meta_file(root, s).is_file()]
