"""One reader per benchmark format, and the explicit split names that select them.

A data root holds one folder per dataset in its official layout (ROOT/mevis, ROOT/refytvos, ROOT/revos, ...);
a split is named "<dataset>/<split>", e.g. "mevis/valid_u". Split names are never reused across datasets.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

from glus.data.errors import DataError, ProblemLog
from glus.data.formats import mevis, reasonvos, refytvos, revos
from glus.data.index import SplitIndex


@dataclass(frozen=True)
class Format:
    read: Callable          # (dataset_dir, split, log, name) -> SplitIndex
    splits: tuple[str, ...]
    present: Callable       # dataset_dir -> splits whose metadata is there
    source_files: Callable  # (dataset_dir, split) -> files whose change invalidates the cached index


def _mevis_files(root: Path, split: str) -> list[Path]:
    return [root / split / "meta_expressions.json", root / split / "mask_dict.json"]


def _refytvos_files(root: Path, split: str) -> list[Path]:
    return [refytvos.meta_file(root, split), refytvos.meta_file(root, "test"), root / split / "Annotations"]


FORMATS: dict[str, Format] = {
    "mevis": Format(mevis.read, mevis.SPLITS, mevis.present_splits, _mevis_files),
    # MeViS v2 adds no-target expressions (anno_id == []) to the same layout.
    "mevis2": Format(mevis.read, mevis.SPLITS, mevis.present_splits, _mevis_files),
    "lvvis": Format(mevis.read, ("train", "valid"), partial(mevis.present_splits, splits=("train", "valid")),
                    _mevis_files),
    "refytvos": Format(refytvos.read, refytvos.SPLITS, refytvos.present_splits, _refytvos_files),
    "refdavis": Format(partial(refytvos.read, subtract_test=False), refytvos.SPLITS, refytvos.present_splits,
                       lambda root, split: [refytvos.meta_file(root, split), root / split / "Annotations"]),
    "revos": Format(revos.read, revos.SPLITS, revos.present_splits,
                    lambda root, split: [revos.meta_file(root, split), root / "mask_dict.json"]),
    "reasonvos": Format(reasonvos.read, reasonvos.SPLITS, reasonvos.present_splits,
                        lambda root, split: [root / "meta_expressions.json", root / "Annotations"]),
}

SPLIT_NAMES = tuple(f"{fmt}/{split}" for fmt, f in FORMATS.items() for split in f.splits)
SYNTHETIC = ("mevis", "refytvos")  # the layouts `glus data synth` writes


def parse_split(name: str) -> tuple[str, str]:
    """'mevis/valid_u' -> ('mevis', 'valid_u'); a dataset with one split may be named alone ('reasonvos')."""
    fmt, _, split = name.partition("/")
    if fmt in FORMATS and not split and len(FORMATS[fmt].splits) == 1:
        split = FORMATS[fmt].splits[0]
    if fmt not in FORMATS or split not in FORMATS[fmt].splits:
        raise DataError(f"unknown split {name!r}", fix=f"use one of: {', '.join(SPLIT_NAMES)}")
    return fmt, split


def require_dataset_dir(dataset_dir: str | Path, fmt: str) -> Path:
    """The dataset folder, or a DataError saying how to get it (checked before anything reads or writes)."""
    dataset_dir = Path(dataset_dir)
    if not dataset_dir.is_dir():
        synth = f", or `glus data synth --out {dataset_dir.parent}` for synthetic data" if fmt in SYNTHETIC else ""
        raise DataError("dataset folder not found", file=dataset_dir,
                        fix=f"put {fmt} there in its official layout (data_prep/README.md){synth}")
    return dataset_dir


def read_dataset_dir(dataset_dir: Path, fmt: str, split: str, log: ProblemLog | None = None) -> SplitIndex:
    """Read one split straight from a dataset folder in `fmt`'s official layout (no cache)."""
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}", fix=f"use one of: {', '.join(FORMATS)}")
    dataset_dir = require_dataset_dir(dataset_dir, fmt)
    log = ProblemLog() if log is None else log
    return FORMATS[fmt].read(dataset_dir, split, log, name=f"{fmt}/{split}")
