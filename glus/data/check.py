"""`glus data check`: validate a dataset folder and list every problem, not just the first."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from glus.data.errors import DataError, ProblemLog
from glus.data.formats import FORMATS, read_dataset_dir, require_dataset_dir
from glus.data.index import NONE, SplitIndex
from glus.data.masks import MaskReader


@dataclass
class SplitReport:
    split: str
    summary: dict = field(default_factory=dict)
    problems: list[DataError] = field(default_factory=list)


def check_frames(index: SplitIndex, decode: bool, log: ProblemLog) -> None:
    for video in tqdm(index.videos.values(), desc=f"{index.name} frames", leave=False):
        for i, name in enumerate(video.frames):
            path = video.frame_path(i)
            if not path.is_file():
                log.report(DataError("frame file is missing", file=path, video=video.id, frame=name))
                continue
            try:
                with Image.open(path) as im:
                    if decode:
                        im.load()  # a truncated JPEG fails here, not at the header
                    size = (im.height, im.width)
            except Exception as err:
                log.report(DataError(f"frame does not decode ({err})", file=path, video=video.id, frame=name))
                continue
            if size != (video.height, video.width):
                log.report(DataError(f"frame size {list(size)} differs from the video's {[video.height, video.width]}",
                                     file=path, video=video.id, frame=name))


def check_masks(index: SplitIndex, log: ProblemLog) -> None:
    """Decode every object of every expression on every frame, once per (video, object)."""
    reader = MaskReader(index)
    seen: dict[tuple, bool] = {}  # (video, object) -> decoded without error
    for expr in tqdm(index.expressions, desc=f"{index.name} masks", leave=False):
        if expr.mask.kind == NONE:
            continue
        for obj in expr.mask.ids:
            key = (expr.video, expr.mask.path, obj)
            if key not in seen:
                seen[key] = _check_object(reader, expr, obj, log)


def _check_object(reader: MaskReader, expr, obj, log: ProblemLog) -> bool:
    video = reader.index.videos[expr.video]
    visible = False
    for i in range(len(video.frames)):
        try:
            m = reader.object_mask(expr, obj, i)
        except DataError as err:
            log.report(DataError(err.problem, file=err.file, video=expr.video, expression=expr.exp_id,
                                 frame=err.frame, fix=err.fix))
            if err.frame is None:  # about the object as a whole (unknown id, wrong length): say it once
                return False
            continue
        visible = visible or (m is not None and bool(m.any()))
    if not visible and expr.mask.kind != "rle":  # RLE objects may legitimately be absent everywhere (v2)
        log.report(DataError(f"object {obj} never appears in any annotation", file=expr.mask.path,
                             video=expr.video, expression=expr.exp_id, fix="check the expression's obj_id"))
    return True


def check_dataset(dataset_dir: str | Path, fmt: str, decode_frames: bool = True) -> list[SplitReport]:
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}", fix=f"use one of: {', '.join(FORMATS)}")
    dataset_dir = require_dataset_dir(dataset_dir, fmt)  # a mistyped path is an error, not a list of problems
    splits = FORMATS[fmt].present(dataset_dir)
    if not splits:
        return [SplitReport("-", problems=[DataError(
            f"no split of format {fmt} found", file=dataset_dir,
            fix=f"expected one of {', '.join(FORMATS[fmt].splits)} in the official {fmt} layout")])]
    reports = []
    for split in splits:
        log = ProblemLog("skip")
        report = SplitReport(f"{fmt}/{split}")
        try:
            index = read_dataset_dir(dataset_dir, fmt, split, log)
            check_frames(index, decode_frames, log)
            check_masks(index, log)
            report.summary = index.summary()
        except DataError as err:  # the split's metadata itself is unusable
            log.problems.append(err)
        report.problems = log.problems
        reports.append(report)
    return reports


def print_reports(reports: list[SplitReport], console: Console | None = None) -> int:
    """Print the summary table and every problem; returns the number of problems."""
    console = console or Console()
    table = Table(title="dataset check")
    for col in ("split", "videos", "expressions", "frames", "no-target", "ground truth", "problems"):
        table.add_column(col, no_wrap=col == "split")
    for r in reports:
        s = r.summary
        table.add_row(r.split, *(str(s.get(k, "-")) for k in ("videos", "expressions", "frames", "no_target",
                                                              "ground_truth")), str(len(r.problems)))
    console.print(table)
    total = 0
    for r in reports:
        for p in r.problems:
            console.print(f"[red]problem[/red] [{r.split}] {p.describe()}", highlight=False, soft_wrap=True)
            total += 1
    return total
