"""`glus predict`: every expression of a split, written as DIR/<pred_dir>/<frame>.png (8-bit 0/255, original size).

Resumable: an expression's PNGs go to `<pred_dir>.partial` and the folder is renamed into place once all its
frames are written, so a folder without the suffix is always complete; a restarted run skips those and
discards partial ones. Sharded: each rank takes a fixed set of whole videos (balanced by frames x expressions),
so ranks never write the same folder and the union of the shards equals a single-process run.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from glus.data.index import SplitIndex
from glus.infer.engine import ENGINES
from glus.infer.paths import commit_partial, safe_join, start_partial
from glus.io import atomic_write_json


@dataclass
class PredictSummary:
    split: str
    mode: str
    shard: tuple[int, int]
    videos: int = 0
    expressions_written: int = 0
    expressions_skipped: int = 0     # complete from an earlier run
    frames: int = 0


def shard_of_env() -> tuple[int, int]:
    """(rank, world) from torchrun / Lightning environment variables; (0, 1) when launched alone."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def assign_videos(index: SplitIndex, world: int) -> list[list[str]]:
    """Whole videos per rank: longest-first onto the least-loaded rank (cost = frames x expressions).
    A pure function of the index, so every rank computes the same assignment without communicating."""
    groups = index.by_video()
    cost = {v: len(index.videos[v].frames) * len(groups.get(v, [])) for v in index.videos}
    shards: list[list[str]] = [[] for _ in range(world)]
    load = [0] * world
    for vid in sorted(index.videos, key=lambda v: (-cost[v], v)):
        r = min(range(world), key=lambda i: (load[i], i))
        shards[r].append(vid)
        load[r] += cost[vid]
    return shards


def write_mask(folder: Path, frame: str, mask_HW: np.ndarray) -> None:
    Image.fromarray(mask_HW.astype(np.uint8) * 255, mode="L").save(safe_join(folder, f"{frame}.png", "frame name"))


def predict_split(model, tokenizer, index: SplitIndex, out: str | Path, mode: str = "engine",
                  shard: tuple[int, int] = (0, 1), batch_expressions: int = 16, num_context: int = 4,
                  window: int = 4, progress: bool = True) -> PredictSummary:
    rank, world = shard
    if not 0 <= rank < world:
        raise ValueError(f"shard {rank}/{world}: the rank must be in [0, {world})")
    out = Path(out)
    engine = ENGINES[mode](model, tokenizer, num_context=num_context, window=window)
    groups = index.by_video()
    videos = assign_videos(index, world)[rank]
    summary = PredictSummary(index.name, mode, shard)
    todo = []
    for vid in videos:
        finals = [(e, safe_join(out, e.pred_dir, "prediction folder")) for e in groups.get(vid, [])]
        pending = [(e, f) for e, f in finals if not f.is_dir()]
        summary.expressions_skipped += len(finals) - len(pending)
        if pending:
            todo.append((vid, pending))
    total = sum(len(index.videos[v].frames) * _runs(len(p), batch_expressions, mode) for v, p in todo)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("predict", total=total)
        for vid, pending in todo:
            bar.update(task, description=vid[:40])
            for start in range(0, len(pending), batch_expressions):
                chunk = pending[start:start + batch_expressions]
                try:
                    _predict_chunk(engine, index.videos[vid], chunk, lambda: bar.advance(task))
                except Exception as err:
                    raise RuntimeError(f"prediction failed on video {vid!r} (expressions "
                                       f"{[e.exp_id for e, _ in chunk]}): {err}. Finished expressions are kept; "
                                       "run the same command again to resume.") from err
                summary.expressions_written += len(chunk)
            summary.videos += 1
            summary.frames += len(index.videos[vid].frames)
    return summary


def _runs(n: int, batch: int, mode: str) -> int:
    """Passes over a video for n expressions: the engine batches them, the faithful loop runs one at a time
    (the bar counts one step per frame result)."""
    return n if mode == "faithful" else -(-n // batch)


def _predict_chunk(engine, video, pending, advance) -> None:
    folders = [start_partial(f) for _, f in pending]
    for result in engine.run(video, [e.text for e, _ in pending]):
        masks = result.masks_at(engine.model, video.height, video.width).cpu().numpy()
        for i, mask in zip(result.expressions, masks):
            write_mask(folders[i], video.frames[result.frame], mask)
        advance()
    for _, final in pending:
        commit_partial(final)


def write_summary(out: str | Path, summary: PredictSummary) -> Path:
    return atomic_write_json(Path(out) / f"_predict.rank{summary.shard[0]}of{summary.shard[1]}.json",
                             asdict(summary))
