"""The unified index: every benchmark format is read into these records.

A `SplitIndex` holds the videos and expressions of one named split (`mevis/valid_u`, `refytvos/valid`, ...).
Masks are not part of the index: `glus.data.masks.MaskReader` decodes them lazily, frame by frame.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

# How an expression's ground truth is stored (MaskSource.kind):
RLE = "rle"                # COCO RLE per frame in a mask_dict.json, keyed by anno id (MeViS, ReVOS, LV-VIS)
PALETTE = "palette"        # palette PNG per frame, object = pixel index (Ref-YouTube-VOS, Ref-DAVIS-17)
BINARY_PNG = "binary_png"  # one folder of 0/255 PNGs per object, frames without a PNG are unannotated (ReasonVOS)
NONE = "none"              # no ground truth in this split (server-scored splits)
MASK_KINDS = (RLE, PALETTE, BINARY_PNG, NONE)


@dataclass(frozen=True)
class MaskSource:
    kind: str              # one of MASK_KINDS
    path: str = ""         # mask_dict.json (RLE) or the Annotations folder of the video (PNG kinds)
    ids: tuple = ()        # anno ids (RLE), palette indices (PALETTE), object folder names (BINARY_PNG)


@dataclass
class Video:
    id: str                # as in the metadata; may contain "/" (ReVOS, ReasonVOS)
    frames: list[str]      # frame names without extension, in temporal order
    frame_dir: str         # folder holding <frame><ext>
    height: int
    width: int
    ext: str = ".jpg"

    def frame_path(self, i: int) -> Path:
        return Path(self.frame_dir) / f"{self.frames[i]}{self.ext}"


@dataclass
class Expression:
    video: str
    exp_id: str
    text: str
    obj_ids: list[str]
    mask: MaskSource
    type_id: int | None = None     # ReVOS: 0 referring, 1 reasoning, 2 excluded from aggregates
    pred_dir: str = ""             # where predictions go, relative to the output root (<video>/<exp_id> by default)
    kind: str = ""                 # synthetic data: what the expression asks for (appearance, look-alike, motion...)
    caption: str = ""              # synthetic data: the referred objects in full ("the red circle moving left")

    def __post_init__(self):
        if not self.pred_dir:
            self.pred_dir = f"{self.video}/{self.exp_id}"

    @property
    def uid(self) -> str:
        return f"{self.video}/{self.exp_id}"

    @property
    def has_target(self) -> bool:
        """False for MeViS v2 no-target expressions (anno_id == [])."""
        return bool(self.mask.ids) or self.mask.kind == NONE


@dataclass
class SplitIndex:
    name: str                              # explicit split name, e.g. "mevis/valid_u"
    root: str                              # the dataset folder it was read from
    videos: dict[str, Video] = field(default_factory=dict)
    expressions: list[Expression] = field(default_factory=list)
    extras: dict = field(default_factory=dict)  # format-specific paths, e.g. ReVOS foreground masks

    @property
    def has_ground_truth(self) -> bool:
        return any(e.mask.kind != NONE for e in self.expressions)

    def expressions_of(self, video: str) -> list[Expression]:
        return [e for e in self.expressions if e.video == video]

    def by_video(self) -> dict[str, list[Expression]]:
        """Expressions grouped by video in one pass (expressions_of is a scan per call)."""
        groups: dict[str, list[Expression]] = {}
        for e in self.expressions:
            groups.setdefault(e.video, []).append(e)
        return groups

    def kinds(self) -> dict[tuple[str, str], str]:
        """{(video, exp_id): kind} of the expressions that carry one (synthetic data; {} for a real benchmark)."""
        return {(e.video, e.exp_id): e.kind for e in self.expressions if e.kind}

    def captions(self) -> dict[tuple[str, str], str]:
        """{(video, exp_id): caption} of the expressions that carry one (synthetic data; {} otherwise)."""
        return {(e.video, e.exp_id): e.caption for e in self.expressions if e.caption}

    def summary(self) -> dict:
        return {
            "split": self.name,
            "videos": len(self.videos),
            "expressions": len(self.expressions),
            "frames": sum(len(v.frames) for v in self.videos.values()),
            "no_target": sum(not e.has_target for e in self.expressions),
            "ground_truth": self.has_ground_truth,
        }

    # Flat rows, for the `datasets` cache (glus.data.cache).
    def to_rows(self) -> tuple[list[dict], list[dict]]:
        videos = [asdict(v) for v in self.videos.values()]
        exprs = []
        for e in self.expressions:
            row = asdict(e)
            row["mask"] = {"kind": e.mask.kind, "path": e.mask.path, "ids": [str(i) for i in e.mask.ids]}
            row["type_id"] = -1 if e.type_id is None else e.type_id
            exprs.append(row)
        return videos, exprs

    @classmethod
    def from_rows(cls, name: str, root: str, videos: list[dict], exprs: list[dict], extras: dict) -> "SplitIndex":
        index = cls(name=name, root=root, extras=extras)
        index.videos = {v["id"]: Video(**v) for v in videos}
        for row in exprs:
            m = row.pop("mask")
            ids = tuple(int(i) for i in m["ids"]) if m["kind"] in (RLE, PALETTE) else tuple(m["ids"])
            row["type_id"] = None if row["type_id"] < 0 else row["type_id"]
            index.expressions.append(Expression(mask=MaskSource(m["kind"], m["path"], ids), **row))
        return index
