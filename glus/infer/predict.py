"""`glus predict`: every expression of a split, written as DIR/<pred_dir>/<frame>.png (8-bit 0/255, original size).

Resumable: an expression's PNGs go to `<pred_dir>.partial` and the folder is renamed into place once all its
frames are written, so a folder without the suffix is always complete; a restarted run skips those and
discards partial ones. Sharded: each rank takes a fixed set of whole videos (balanced by frames x expressions),
so ranks never write the same folder and the union of the shards equals a single-process run. The settings
(mode, window, context frames, key frames) are recorded in DIR/_job.json, and a rerun with other ones is refused.
Key frames (`glus.infer.keyframes`): an expression starts at its key frame and runs forward to the end, then
backward to the first frame from a fresh memory; every mask lands under its own frame name.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
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
from glus.infer.keyframes import KeyFrames
from glus.infer.jobs import VideoJob, assign_videos, shard_of_env  # noqa: F401 (shard_of_env: re-exported)
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
    keyframes: str | None = None     # the key-frame file, "first", or None (every expression from frame 0)
    keyframes_missing: int = 0       # expressions of the split not in the key-frame file (started at frame 0)
    started_mid_video: int = 0       # expressions of this run whose key frame is not the first frame


def write_mask(folder: Path, frame: str, mask_HW: np.ndarray) -> None:
    Image.fromarray(mask_HW.astype(np.uint8) * 255, mode="L").save(safe_join(folder, f"{frame}.png", "frame name"))


def predict_split(model, tokenizer, index: SplitIndex, out: str | Path, mode: str = "engine",
                  shard: tuple[int, int] = (0, 1), batch_expressions: int = 16, num_context: int = 4,
                  window: int = 4, progress: bool = True, keyframes: KeyFrames | None = None,
                  vos_model=None, every: int = 8, vos_ckpt: str | None = None) -> PredictSummary:
    """keyframes: where each expression starts (`glus.infer.keyframes`); None: at its first frame. From a key
    frame k > 0, one pass runs forward to the last frame and a second, with a fresh memory, backward to the
    first frame; both start with k as their first query frame, and k's mask is the forward pass'.
    The settings are recorded in OUT/_job.json: a rerun resumes only with the same ones (other key frames, mode
    or window would keep masks made another way).
    mode "sparse" (`glus.infer.sparse`): GLUS on every `every`-th frame of a pass, `vos_model` (the plain VOS
    path, loaded from `vos_ckpt`) in between."""
    rank, world = shard
    if not 0 <= rank < world:
        raise ValueError(f"shard {rank}/{world}: the rank must be in [0, {world})")
    out = Path(out)
    settings = predict_settings(index, mode, num_context, window, keyframes)
    if mode == "sparse":
        from glus.infer.sparse import SparseEngine

        if vos_model is None:
            raise ValueError("mode sparse needs the plain VOS model (glus predict --vos EXPORT)")
        settings.update(every=every, vos=vos_ckpt)
        engine = SparseEngine(model, tokenizer, vos_model, every, num_context=num_context, window=window)
    else:
        engine = ENGINES[mode](model, tokenizer, num_context=num_context, window=window)
    VideoJob(out, settings, []).start()
    groups = index.by_video()
    videos = assign_videos(index, world)[rank]
    summary = PredictSummary(index.name, mode, shard, keyframes=keyframes.source if keyframes else None,
                             keyframes_missing=len(keyframes.missing) if keyframes else 0)
    todo = []
    for vid in videos:
        finals = [(e, safe_join(out, e.pred_dir, "prediction folder")) for e in groups.get(vid, [])]
        pending = [(e, f) for e, f in finals if not f.is_dir()]
        summary.expressions_skipped += len(finals) - len(pending)
        if pending:
            todo.append((vid, _chunks(pending, keyframes, batch_expressions)))
    total = sum(_results(len(index.videos[v].frames), start, len(chunk), mode)
                for v, chunks in todo for start, chunk in chunks)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("predict", total=total)
        for vid, chunks in todo:
            bar.update(task, description=vid[:40])
            for start, chunk in chunks:
                try:
                    _predict_chunk(engine, index.videos[vid], chunk, start, lambda: bar.advance(task))
                except Exception as err:
                    raise RuntimeError(f"prediction failed on video {vid!r} (expressions "
                                       f"{[e.exp_id for e, _ in chunk]}, start frame {start}): {err}. Finished "
                                       "expressions are kept; run the same command again to resume.") from err
                summary.expressions_written += len(chunk)
                summary.started_mid_video += len(chunk) if start > 0 else 0
            summary.videos += 1
            summary.frames += len(index.videos[vid].frames)
    return summary


def predict_settings(index: SplitIndex, mode: str, num_context: int, window: int,
                     keyframes: KeyFrames | None) -> dict:
    starts = None
    if keyframes is not None and any(keyframes.starts.values()):  # all at frame 0 is the plain forward pass
        starts = hashlib.sha256(json.dumps(keyframes.starts, sort_keys=True).encode()).hexdigest()
    return {"split": index.name, "mode": mode, "num_context": num_context, "window": window,
            "keyframe_starts_sha256": starts}


def _chunks(pending, keyframes: KeyFrames | None, batch: int) -> list[tuple[int, list]]:
    """(start frame, expressions) runs of one video: expressions that start at the same frame share the passes
    (the engine batches up to `batch` of them; the faithful loop runs them one by one anyway)."""
    by_start: dict[int, list] = {}
    for e, folder in pending:
        by_start.setdefault(keyframes.start(e) if keyframes else 0, []).append((e, folder))
    return [(start, group[i:i + batch]) for start, group in sorted(by_start.items())
            for i in range(0, len(group), batch)]


def _results(num_frames: int, start: int, n: int, mode: str) -> int:
    """Frame results of one chunk (the bar counts them): the engine yields one per frame for all its
    expressions, the faithful loop one per frame and expression; a start after frame 0 adds the backward pass."""
    per_pass = num_frames - start + (start + 1 if start > 0 else 0)
    return per_pass * (n if mode == "faithful" else 1)


class HostCopy:
    """A device tensor's copy to the host, started now and waited for later: on CUDA into pinned memory with an
    event, so that the masks of frame t are written while the device computes frame t + 1."""

    def __init__(self, t: torch.Tensor):
        self.event = None
        if t.device.type == "cuda":
            self.host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
            self.host.copy_(t, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.host = t

    def numpy(self) -> np.ndarray:
        if self.event is not None:
            self.event.synchronize()
        return self.host.numpy()


def _predict_chunk(engine, video, pending, start: int, advance) -> None:
    folders = [start_partial(f) for _, f in pending]
    state = engine.open(video, [e.text for e, _ in pending])

    def write(frame: int, expressions: list[int], masks: HostCopy) -> None:
        for i, mask in zip(expressions, masks.numpy()):
            write_mask(folders[i], video.frames[frame], mask)

    waiting = None  # the previous frame's masks, written once this frame's work is queued on the device
    for reverse in ((False, True) if start > 0 else (False,)):
        for result in engine.propagate(state, start, reverse):
            advance()
            if reverse and result.frame == start:  # the key frame's mask is the forward pass'
                continue
            copy = HostCopy(result.masks_at(engine.model, video.height, video.width))
            if waiting:
                write(*waiting)
            waiting = (result.frame, result.expressions, copy)
    if waiting:
        write(*waiting)
    for (_, final), folder in zip(pending, folders):
        written = len(list(folder.glob("*.png")))
        if written != len(video.frames):  # every frame once, under its own name: never commit less
            raise RuntimeError(f"{written} masks written for {len(video.frames)} frames in {folder}")
        commit_partial(final)


def write_summary(out: str | Path, summary: PredictSummary) -> Path:
    return atomic_write_json(Path(out) / f"_predict.rank{summary.shard[0]}of{summary.shard[1]}.json",
                             asdict(summary))
