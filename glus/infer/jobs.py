"""Whole-split jobs whose unit of work is one video (pseudo-labels, key-frame scores): sharded over processes and
nodes, resumable after a kill, each video's result one file written atomically.

- Sharding: every rank computes the same assignment of whole videos from the index (no communication), so a
  video is written by exactly one shard and the union of the shards is a single-process run.
- Resume: a video's file appears whole (temporary file renamed) or not at all; a rerun skips the videos whose
  file exists and recomputes the others, so a `kill -9` at any moment loses at most the videos in flight and
  never leaves duplicate or partial rows.
- Settings: the first run writes OUT/_job.json (what the files were computed with); a rerun with other settings
  into the same folder is refused, since its rows would mix with the old ones.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from glus.data.index import SplitIndex
from glus.errors import GlusError
from glus.infer.paths import safe_join
from glus.io import atomic_path

SETTINGS = "_job.json"
ROWS = "rows"  # OUT/rows/<video>.parquet: one file per video


class JobSettingsError(GlusError, ValueError):
    pass


def shard_of_env() -> tuple[int, int]:
    """(rank, world) from torchrun / Lightning environment variables; (0, 1) when launched alone."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def parse_shard(text: str | None) -> tuple[int, int]:
    """'RANK/WORLD' (e.g. '0/4'), or the torchrun environment when None."""
    if text is None:
        return shard_of_env()
    try:
        rank, world = (int(x) for x in text.split("/"))
    except ValueError:
        raise GlusError(f"--shard {text!r}: expected RANK/WORLD, e.g. 0/4") from None
    if not 0 <= rank < world:
        raise GlusError(f"--shard {text!r}: the rank must be in [0, {world})")
    return rank, world


def assign_videos(index: SplitIndex, world: int, videos: list[str] | None = None) -> list[list[str]]:
    """Whole videos per rank: longest-first onto the least-loaded rank (cost = frames x expressions).
    A pure function of the index, so every rank computes the same assignment without communicating."""
    groups = index.by_video()
    chosen = list(index.videos) if videos is None else list(videos)
    cost = {v: len(index.videos[v].frames) * len(groups.get(v, [])) for v in chosen}
    shards: list[list[str]] = [[] for _ in range(world)]
    load = [0] * world
    for vid in sorted(chosen, key=lambda v: (-cost[v], v)):
        r = min(range(world), key=lambda i: (load[i], i))
        shards[r].append(vid)
        load[r] += cost[vid]
    return shards


class VideoJob:
    """OUT/_job.json (settings) and OUT/rows/<video>.parquet (one table per video) for the `videos` of a job."""

    def __init__(self, out: str | Path, settings: dict, videos: list[str]):
        self.out, self.settings, self.videos = Path(out), dict(settings), list(videos)

    def path(self, video: str) -> Path:
        return safe_join(self.out / ROWS, f"{video}.parquet", "video id")

    def start(self) -> None:
        """Record the settings, or check them against those of the run that began this folder. Shards started
        together race here: the settings file is linked into place whole, the first link wins, and every shard
        (the winner too) then checks its settings against the file."""
        file = self.out / SETTINGS
        if not file.is_file():
            self.out.mkdir(parents=True, exist_ok=True)
            tmp = self.out / f".{SETTINGS}.{os.getpid()}.tmp"  # a name of this process' own
            try:
                tmp.write_text(json.dumps(self.settings, indent=2))
                os.link(tmp, file)  # atomic, and refused when another shard was first: its file is the record
            except FileExistsError:
                pass
            finally:
                tmp.unlink(missing_ok=True)
        old = json.loads(file.read_text())
        differ = sorted(k for k in set(old) | set(self.settings) if old.get(k) != self.settings.get(k))
        if differ:
            lines = [f"  {k}: {old.get(k)!r} then, {self.settings.get(k)!r} now" for k in differ]
            raise JobSettingsError(f"{self.out} holds results computed with other settings:\n" + "\n".join(lines)
                                   + "\nFix: give a new --out folder, or rerun with the settings above to resume")

    def done(self, video: str) -> bool:
        return self.path(video).is_file()

    def pending(self, videos: list[str]) -> list[str]:
        return [v for v in videos if not self.done(v)]

    def complete(self) -> bool:
        """True when every video of the job (all shards) has its file."""
        return all(self.done(v) for v in self.videos)

    def write(self, video: str, rows: list[dict], schema: pa.Schema) -> Path:
        """One video's rows, atomically. An empty list writes an empty table: the video is done, with no rows."""
        path = self.path(video)
        table = pa.Table.from_pylist(rows, schema=schema)
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
        return path

    def files(self) -> list[Path]:
        missing = [v for v in self.videos if not self.done(v)]
        if missing:
            raise GlusError(f"{self.out}: {len(missing)} video(s) of the job are not written yet "
                            f"(e.g. {missing[:3]}). Fix: run the job (every shard) to the end")
        return [self.path(v) for v in self.videos]

    def read(self) -> pa.Table:
        """All rows of the job, videos in job order."""
        return pa.concat_tables([pq.read_table(p) for p in self.files()])


def read_job_settings(out: str | Path) -> dict:
    file = Path(out) / SETTINGS
    if not file.is_file():
        raise GlusError(f"{file} not found: {out} is not the output folder of a finished job")
    return json.loads(file.read_text())


def read_job(out: str | Path) -> pa.Table:
    """Every row of a finished job, from its folder alone (the videos are in its settings)."""
    settings = read_job_settings(out)
    return VideoJob(out, settings, settings["videos"]).read()
