"""`glus pseudolabel`: per-frame scores of a GLUS export on a subset of a split, the training rows of a key-frame
selector (which frames the model segments well from, and which it does not).

For every selected video, every expression with ground truth and every frame with ground truth, one row:
split, video, exp_id, frame_index, frame_name, iou, j, f, present. `j` is the DAVIS region similarity of the
frame, which IS the IoU of the predicted and true masks (1 when both are empty); the column `iou` holds the same
value under the name the key-frame work uses, so that neither reader has to know the other's name. `f` is the
DAVIS boundary F; `present` says whether the target is visible in the frame (non-empty ground truth).

The subset is a deterministic function of (split, fraction, seed), recorded with the export's hash in
OUT/_job.json. The job is a `glus.infer.jobs.VideoJob`: sharded by whole videos, one Parquet file per video
(OUT/rows/<video>.parquet, written atomically), so a run killed at any moment resumes by rerunning the same
command, and a rerun with other settings into the same folder is refused.
Frames without ground truth (sparse annotation, ReasonVOS) get no row: there is nothing to score them against.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from glus.data.index import NONE, Expression, SplitIndex
from glus.errors import GlusError
from glus.infer.jobs import VideoJob, assign_videos, read_job
from glus.io import atomic_write_json, tree_hash

SCHEMA = pa.schema([
    ("split", pa.string()),
    ("video", pa.string()),
    ("exp_id", pa.string()),
    ("frame_index", pa.int32()),
    ("frame_name", pa.string()),
    ("iou", pa.float32()),
    ("j", pa.float32()),
    ("f", pa.float32()),
    ("present", pa.bool_()),
])


class PseudoLabelError(GlusError, RuntimeError):
    """A video failed for a reason the user can fix (a bad annotation file): printed without a traceback."""


@dataclass
class PseudoLabelSummary:
    split: str
    shard: tuple[int, int]
    videos_written: int = 0
    videos_skipped: int = 0   # complete from an earlier run
    rows: int = 0             # rows written by this run


def has_ground_truth(e: Expression) -> bool:
    """No-target expressions (MeViS v2) count: their empty ground truth is a score too (J = 1 for an empty
    prediction)."""
    return e.mask.kind != NONE


def check_fraction(fraction: float) -> None:
    if not 0 < fraction <= 1:  # also refuses NaN
        raise GlusError(f"--fraction {fraction}: expected a fraction of the videos in (0, 1]")


def select_videos(index: SplitIndex, fraction: float, seed: int) -> list[str]:
    """The videos to label: a seeded permutation of the videos with ground truth (sorted first, so the subset
    depends on the split's content, never on the metadata's order), its first max(1, round(fraction * n))."""
    check_fraction(fraction)
    groups = index.by_video()
    candidates = sorted(v for v in index.videos if any(has_ground_truth(e) for e in groups.get(v, [])))
    if not candidates:
        raise GlusError(f"split {index.name} has no ground truth: pseudo-labels need a split with masks "
                        "(e.g. mevis/train, mevis/valid_u)")
    order = np.random.default_rng(seed).permutation(len(candidates))
    keep = max(1, round(fraction * len(candidates)))
    return sorted(candidates[i] for i in order[:keep])


def job_settings(index: SplitIndex, ckpt: str | Path, fraction: float, seed: int, mode: str, num_context: int,
                 window: int, videos: list[str]) -> dict:
    """What the rows depend on; the hash names the weights, so a retrained export in the same folder is not
    mistaken for the one the rows came from."""
    folder = Path(ckpt)
    return {"ckpt": str(ckpt), "ckpt_hash": tree_hash(folder) if folder.is_dir() else None,
            "split": index.name, "root": index.root, "fraction": fraction, "seed": seed, "mode": mode,
            "num_context": num_context, "window": window, "videos": list(videos)}


def pseudolabel_split(model, tokenizer, index: SplitIndex, out: str | Path, *, ckpt: str | Path,
                      fraction: float = 0.5, seed: int = 0, mode: str = "engine", shard: tuple[int, int] = (0, 1),
                      batch_expressions: int = 16, num_context: int = 4, window: int = 4,
                      progress: bool = True) -> PseudoLabelSummary:
    """Label this shard's share of the selected videos, skipping those an earlier run finished."""
    from glus.data.masks import MaskReader
    from glus.infer.engine import ENGINES  # torch: imported when a job runs, not when the CLI is built

    rank, world = shard
    if not 0 <= rank < world:
        raise ValueError(f"shard {rank}/{world}: the rank must be in [0, {world})")
    videos = select_videos(index, fraction, seed)
    settings = job_settings(index, ckpt, fraction, seed, mode, num_context, window, videos)
    settings["dtype"] = str(next(model.parameters()).dtype)  # bf16 rows must not mix with fp32 ones on a resume
    job = VideoJob(out, settings, videos)
    job.start()
    mine = assign_videos(index, world, videos)[rank]
    todo = job.pending(mine)
    summary = PseudoLabelSummary(index.name, (rank, world), videos_skipped=len(mine) - len(todo))
    engine = ENGINES[mode](model, tokenizer, num_context=num_context, window=window)
    reader, groups = MaskReader(index), index.by_video()
    exprs = {v: [e for e in groups[v] if has_ground_truth(e)] for v in todo}
    total = sum(len(index.videos[v].frames) * _passes(len(exprs[v]), batch_expressions, mode) for v in todo)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task(f"pseudolabel {rank}/{world}", total=total)
        for vid in todo:
            bar.update(task, description=f"pseudolabel {rank}/{world} {vid[:40]}")
            rows = _label_video_or_explain(engine, reader, index, vid, exprs[vid], batch_expressions,
                                           lambda: bar.advance(task))
            job.write(vid, rows, SCHEMA)
            summary.videos_written += 1
            summary.rows += len(rows)
    return summary


def _passes(n: int, batch: int, mode: str) -> int:
    """Passes over a video for n expressions (the bar counts one step per frame result): the engine batches
    them, the faithful loop runs one expression at a time."""
    return n if mode == "faithful" else -(-n // batch)


def _label_video_or_explain(engine, reader, index, vid, exprs, batch, advance) -> list[dict]:
    try:
        return label_video(engine, reader, index, vid, exprs, batch, advance)
    except Exception as err:
        kind = PseudoLabelError if isinstance(err, GlusError) else RuntimeError
        raise kind(f"pseudo-labelling failed on video {vid!r}: {err}. Finished videos are kept; run the same "
                   "command again to resume.") from err


def label_video(engine, reader, index: SplitIndex, vid: str, exprs: list[Expression], batch: int,
                advance=lambda: None) -> list[dict]:
    """The rows of one video, by expression (in `exprs` order) then frame. Each frame is scored as the engine
    yields it, so memory holds one frame's masks, never a whole video's."""
    video = index.videos[vid]
    per_expr: list[list[dict]] = [[] for _ in exprs]
    for start in range(0, len(exprs), batch):
        chunk = exprs[start:start + batch]
        for result in engine.run(video, [e.text for e in chunk]):
            masks = result.masks_at(engine.model, video.height, video.width).cpu().numpy()
            for i, mask in zip(result.expressions, masks):
                row = score_frame(reader, index, chunk[i], result.frame, mask)
                if row is not None:
                    per_expr[start + i].append(row)
            advance()
    for rows in per_expr:  # the engines yield frames in order; sorting makes the row order a guarantee
        rows.sort(key=lambda r: r["frame_index"])
    return [row for rows in per_expr for row in rows]


def score_frame(reader, index: SplitIndex, e: Expression, frame: int, mask_HW: np.ndarray) -> dict | None:
    """One row, or None when the frame has no ground truth."""
    from glus.eval.metrics import f_per_frame, j_per_frame

    gt = reader.target(e, frame)
    if gt is None:
        return None
    j = float(j_per_frame(mask_HW, gt)[0])
    return {"split": index.name, "video": e.video, "exp_id": e.exp_id, "frame_index": frame,
            "frame_name": index.videos[e.video].frames[frame], "iou": j, "j": j,
            "f": float(f_per_frame(mask_HW, gt)[0]), "present": bool(gt.any())}


def read_pseudolabels(out: str | Path) -> pa.Table:
    """Every row of a finished job (all shards), videos in job order; an unfinished job is an error naming
    the missing videos."""
    return read_job(out)


def write_summary(out: str | Path, summary: PseudoLabelSummary) -> Path:
    rank, world = summary.shard
    return atomic_write_json(Path(out) / f"_pseudolabel.rank{rank}of{world}.json", asdict(summary))
