"""MeViS (and MeViS v2, LV-VIS converted): ROOT/<split>/{JPEGImages, meta_expressions.json, mask_dict.json}."""
from __future__ import annotations

from pathlib import Path

from glus.data.errors import DataError, ProblemLog
from glus.data.formats.common import parse_mevis_style
from glus.data.index import SplitIndex

SPLITS = ("train", "valid_u", "valid")
SERVER_SPLITS = ("valid",)  # no masks shipped: scored by the benchmark's server


def read(root: Path, split: str, log: ProblemLog, name: str) -> SplitIndex:
    folder = root / split
    mask_file = folder / "mask_dict.json"
    if not mask_file.is_file():
        if split not in SERVER_SPLITS:
            raise DataError("mask_dict.json not found", file=mask_file,
                            fix=f"split {split} ships its masks in mask_dict.json: download it into {folder}")
        mask_file = None
    videos, exprs = parse_mevis_style(folder / "meta_expressions.json", folder / "JPEGImages", mask_file, log)
    return SplitIndex(name=name, root=str(root), videos=videos, expressions=exprs)


def present_splits(root: Path, splits=SPLITS) -> list[str]:
    return [s for s in splits if (root / s / "meta_expressions.json").is_file()]
