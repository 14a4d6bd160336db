"""`glus keyframes`: a key-frame selector export scores every frame of every expression of a split, and the key
frame of each expression (its best-scored frame; the earliest on a tie) is written in the published key-frame
format (`glus.infer.keyframes`).

A job over whole videos (`glus.infer.jobs`): sharded, resumable after a kill, one score table per video under
FILE.scores/ (columns split, video, exp_id, frame_index, frame_name, score). The shard that finds every video
scored writes FILE; a rerun of any shard after that rewrites it from the tables.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from glus.data.index import SplitIndex
from glus.infer.jobs import VideoJob, assign_videos
from glus.infer.keyframes import write_keyframes
from glus.io import atomic_write_json, tree_hash

SCORES_SCHEMA = pa.schema([("split", pa.string()), ("video", pa.string()), ("exp_id", pa.string()),
                           ("frame_index", pa.int32()), ("frame_name", pa.string()), ("score", pa.float32())])


@dataclass
class KeyFrameSummary:
    split: str
    shard: tuple[int, int]
    videos_written: int = 0
    videos_skipped: int = 0
    expressions: int = 0
    keyframes_file: str | None = None  # set when this shard found the job complete and wrote FILE


def scores_dir(out_file: str | Path) -> Path:
    out_file = Path(out_file)
    return out_file.with_name(out_file.name + ".scores")


def score_split(model, tokenizer, index: SplitIndex, out_file: str | Path, *, ckpt: str,
                shard: tuple[int, int] = (0, 1), batch_frames: int = 16, progress: bool = True) -> KeyFrameSummary:
    from glus.infer.selector import SelectorScorer

    rank, world = shard
    groups = index.by_video()
    videos = [v for v in index.videos if groups.get(v)]
    settings = {"ckpt": str(ckpt), "ckpt_hash": tree_hash(ckpt) if Path(ckpt).is_dir() else None,
                "split": index.name, "root": index.root, "videos": videos,
                "dtype": str(next(model.parameters()).dtype)}  # bf16 scores must not mix with fp32 ones
    job = VideoJob(scores_dir(out_file), settings, videos)
    job.start()
    mine = assign_videos(index, world, videos)[rank]
    todo = job.pending(mine)
    summary = KeyFrameSummary(index.name, shard, videos_skipped=len(mine) - len(todo))
    scorer = SelectorScorer(model, tokenizer, batch_frames=batch_frames)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task(f"key frames {rank}/{world}", total=sum(len(index.videos[v].frames) for v in todo))
        for vid in todo:
            video, exprs = index.videos[vid], groups[vid]
            try:
                scores = scorer.score_video(video, [e.text for e in exprs])
            except Exception as err:
                raise RuntimeError(f"scoring failed on video {vid!r}: {err}. Finished videos are kept; run the "
                                   "same command again to resume.") from err
            rows = [{"split": index.name, "video": vid, "exp_id": e.exp_id, "frame_index": t,
                     "frame_name": video.frames[t], "score": float(scores[i, t])}
                    for i, e in enumerate(exprs) for t in range(len(video.frames))]
            job.write(vid, rows, SCORES_SCHEMA)
            summary.videos_written += 1
            summary.expressions += len(exprs)
            bar.advance(task, len(video.frames))
    if job.complete():
        write_keyframes(out_file, index, key_frames(job.read()))
        summary.keyframes_file = str(out_file)
    return summary


def key_frames(scores, column: str = "score") -> dict[str, int]:
    """uid -> the frame index with the highest `column` per expression (the earliest frame on a tie)."""
    frame = scores.to_pandas() if isinstance(scores, pa.Table) else scores  # arrow (a job's rows) or pandas
    frame = frame[["video", "exp_id", "frame_index", column]]
    frame = frame.sort_values(["video", "exp_id", column, "frame_index"], ascending=[True, True, False, True],
                              kind="stable")
    first = frame.drop_duplicates(["video", "exp_id"])
    return {f"{v}/{e}": int(t) for v, e, t in zip(first["video"], first["exp_id"], first["frame_index"])}


def write_summary(out_file: str | Path, summary: KeyFrameSummary) -> Path:
    return atomic_write_json(scores_dir(out_file) / f"_keyframes.rank{summary.shard[0]}of{summary.shard[1]}.json",
                             asdict(summary))

