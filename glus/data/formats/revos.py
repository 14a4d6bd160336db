"""ReVOS: one folder with JPEGImages, mask_dict.json, mask_dict_foreground.json, meta_expressions_{split}_.json."""
from __future__ import annotations

from pathlib import Path

from glus.data.errors import DataError, ProblemLog
from glus.data.formats.common import parse_mevis_style
from glus.data.index import SplitIndex

SPLITS = ("train", "valid")


def meta_file(root: Path, split: str) -> Path:
    return root / f"meta_expressions_{split}_.json"


def read(root: Path, split: str, log: ProblemLog, name: str) -> SplitIndex:
    mask_file = root / "mask_dict.json"
    if not mask_file.is_file():
        raise DataError("mask_dict.json not found", file=mask_file, fix=f"download ReVOS' mask_dict.json into {root}")
    videos, exprs = parse_mevis_style(meta_file(root, split), root / "JPEGImages", mask_file, log, with_type=True)
    extras = {}
    foreground = root / "mask_dict_foreground.json"
    if foreground.is_file():  # needed only for the robustness score R
        extras["foreground"] = str(foreground)
    return SplitIndex(name=name, root=str(root), videos=videos, expressions=exprs, extras=extras)


def present_splits(root: Path) -> list[str]:
    return [s for s in SPLITS if meta_file(root, s).is_file()]
