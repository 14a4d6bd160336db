"""Key-frame files: where each expression's inference starts.

The published format (read by the published `inference_iter.py --score_json`, written by `glus keyframes`): a JSON
object mapping "<video>_<expression id>" to the key frame's *number*, the integer value of its frame name (frame
"00045" is 45), not its position in the video; the published code turns it into a position by looking it up among
the video's frame names as integers. Names that are not integers are accepted as strings (the frame's name). An
expression missing from the file starts at its first frame, as published; the reader counts them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from glus.data.index import Expression, SplitIndex, Video
from glus.errors import GlusError
from glus.io import atomic_write_json

FIRST = "first"  # `--keyframes first`: every expression starts at its first frame


class KeyFrameFileError(GlusError, ValueError):
    pass


def keyframe_key(expr: Expression) -> str:
    """The published key: video id and expression id joined by '_'."""
    return f"{expr.video}_{expr.exp_id}"


def frame_number(video: Video, index: int) -> int | str:
    """What the file stores for frame `index`: its name as an integer when it is one (published), else the name."""
    name = video.frames[index]
    return int(name) if name.isdigit() else name


def frame_position(video: Video, value, where: str) -> int:
    """The position in the video of the frame a file names: a number (45, "45" or 45.0 for frame "00045", as the
    published `int(value)` reads it) or a frame name."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise KeyFrameFileError(f"{where}: {value!r} is not a frame number (an integer, e.g. 45 for frame 00045)")
    number = int(value) if isinstance(value, int) or value.isdigit() else None
    for i, name in enumerate(video.frames):
        if name == str(value) or (number is not None and name.isdigit() and int(name) == number):
            return i
    raise KeyFrameFileError(f"{where}: frame {value!r} is not a frame of video {video.id!r} (frames "
                            f"{video.frames[0]} .. {video.frames[-1]}). Fix: the file must be for this split "
                            "(glus keyframes --data SPLIT writes one)")


@dataclass
class KeyFrames:
    """Start frame (a position in the video) per expression uid, for the expressions of one split."""

    starts: dict[str, int]
    source: str = FIRST
    missing: list[str] = field(default_factory=list)   # expressions not in the file: they start at frame 0
    unused: list[str] = field(default_factory=list)    # keys of the file that name no expression of the split

    def start(self, expr: Expression) -> int:
        return self.starts.get(expr.uid, 0)

    def describe(self) -> str:
        moved = sum(1 for s in self.starts.values() if s > 0)
        text = f"key frames from {self.source}: {moved} of {len(self.starts)} expression(s) start after frame 0"
        if self.missing:
            text += f"; {len(self.missing)} not in the file start at their first frame"
        if self.unused:
            text += f"; {len(self.unused)} key(s) of the file name no expression of this split"
        return text


def read_keyframes(path: str | Path, index: SplitIndex) -> KeyFrames:
    """`path` = "first" or a key-frame JSON file; every expression of `index` gets a start frame."""
    if str(path) == FIRST:
        return KeyFrames({e.uid: 0 for e in index.expressions})
    path = Path(path)
    if not path.is_file():
        raise KeyFrameFileError(f"{path} not found. Fix: pass a key-frame JSON file (written by glus keyframes, or "
                                "the published format) or 'first'")
    try:
        table = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise KeyFrameFileError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(table, dict):
        raise KeyFrameFileError(f"{path}: expected a JSON object {{\"<video>_<exp_id>\": frame number}}, "
                                f"got {type(table).__name__}")
    starts, missing, used = {}, [], set()
    for e in index.expressions:
        key = keyframe_key(e)
        if key in table:
            starts[e.uid] = frame_position(index.videos[e.video], table[key], f"{path}, key {key!r}")
            used.add(key)
        else:
            starts[e.uid] = 0
            missing.append(e.uid)
    unused = sorted(set(table) - used)
    if table and not used:  # a file for another split would silently run everything from frame 0
        raise KeyFrameFileError(f"{path}: none of its {len(table)} keys (e.g. {unused[0]!r}) names an expression of "
                                f"{index.name} (keys are \"<video>_<exp_id>\", e.g. {keyframe_key(index.expressions[0])!r}). "
                                "Fix: pass the key-frame file of this split")
    return KeyFrames(starts, str(path), missing, unused)


def write_keyframes(path: str | Path, index: SplitIndex, starts: dict[str, int]) -> Path:
    """The published format, for the expressions in `starts` (uid -> position), in index order."""
    table = {keyframe_key(e): frame_number(index.videos[e.video], starts[e.uid])
             for e in index.expressions if e.uid in starts}
    return atomic_write_json(path, table)
