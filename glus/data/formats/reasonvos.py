"""ReasonVOS: ROOT/{JPEGImages/<video>, Annotations/<source>_<video>_<obj_id>/<frame>.png, meta_expressions.json}.

`expressions` is a list of {obj_id, exp_id, exp_text, is_sent} (a dict keyed by exp_id is accepted too).
Only frames with a ground-truth PNG are scored; predictions go to <source>_<video>_<obj_id>/<exp_id>/.
"""
from __future__ import annotations

from pathlib import Path

from glus.data.errors import DataError, ProblemLog
from glus.data.formats.common import clean_text, load_json, make_video, videos_of
from glus.data.index import BINARY_PNG, Expression, MaskSource, SplitIndex

SPLITS = ("test",)


def read(root: Path, split: str, log: ProblemLog, name: str) -> SplitIndex:
    path = root / "meta_expressions.json"
    entries = videos_of(load_json(path, "meta_expressions.json", "download ReasonVOS into this folder"), path)
    index = SplitIndex(name=name, root=str(root))
    for vid, entry in entries.items():
        try:
            index.videos[vid] = make_video(vid, entry, root / "JPEGImages", path)
            index.expressions += _expressions(vid, entry, path, root / "Annotations")
        except DataError as err:
            index.videos.pop(vid, None)
            log.report(err)
    return index


def _expressions(vid: str, entry: dict, path: Path, anno_root: Path) -> list[Expression]:
    source = str(entry.get("source", "")).lower()
    if not source:
        raise DataError('"source" is missing', file=path, video=vid, fix="use ReasonVOS' own meta_expressions.json")
    exps = entry.get("expressions")
    items = exps if isinstance(exps, list) else [dict(v, exp_id=k) for k, v in exps.items()] \
        if isinstance(exps, dict) else None
    if items is None:
        raise DataError('"expressions" must be a list of {obj_id, exp_id, exp_text, is_sent}', file=path, video=vid)
    out = []
    for exp in items:
        eid = str(exp.get("exp_id"))
        text = clean_text(exp.get("exp_text", exp.get("exp")), path, vid, eid)
        obj = str(exp.get("obj_id"))
        folder = f"{source}_{vid}_{obj}"
        if not (anno_root / folder).is_dir():
            raise DataError("object mask folder is missing", file=anno_root / folder, video=vid, expression=eid,
                            fix="re-extract ReasonVOS' Annotations")
        out.append(Expression(video=vid, exp_id=eid, text=text, obj_ids=[obj],
                              mask=MaskSource(BINARY_PNG, str(anno_root), (folder,)), pred_dir=f"{folder}/{eid}"))
    return out


def present_splits(root: Path) -> list[str]:
    return ["test"] if (root / "meta_expressions.json").is_file() else []
