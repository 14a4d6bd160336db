"""Training the key-frame selector: the pseudo-label table as a dataset, and a thin LightningModule.

The table (`glus pseudolabel`, LABELS/rows/**/*.parquet) holds one row per (expression, frame) with the IoU of
an early GLUS' mask. A sample is one row: an expression drawn uniformly among the table's expressions, a target
frame drawn uniformly among its rows, `num_reference` reference frames drawn one per equal segment of the video
(`train_context_frames`); its label is the row's IoU. Sample i is a pure function of (seed, i), so that any
worker, and a resumed run, sees the same samples (`ResumableSampler`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset

from glus.data.frames import load_frames
from glus.data.index import SplitIndex, Video
from glus.data.samplers import rng_for, train_context_frames
from glus.errors import GlusError
from glus.model.selector import ScorePromptBatch, ScorePromptBuilder, SelectorBuilder
from glus.train.base import TrainingBase
from glus.train.datamodule import GLUSDataModule
from glus.transforms import clip_input

LABEL_COLUMNS = ("split", "video", "exp_id", "frame_index", "frame_name", "iou", "present")
MAKE_LABELS = "run `glus pseudolabel --ckpt GLUS_EXPORT --data SPLIT --root ROOT --out LABELS` (make pseudolabel)"


class LabelTableError(GlusError, ValueError):
    """The pseudo-label table is missing, malformed, or disagrees with the data it claims to label."""


@dataclass
class SelectorClipSpec:
    clip_size: int = 224
    clip_resize: str = "crop"   # as the model's VisionLanguageConfig.clip_resize (recipes link the two)
    num_reference: int = 8


@dataclass
class LabelGroup:
    """The rows of one expression, in frame order."""

    split: str
    video: str
    exp_id: str
    frames: np.ndarray   # (N,) int frame indices
    names: list[str]     # (N,) frame names, checked against the video
    labels: np.ndarray   # (N,) float32 targets
    file: str            # the parquet file the rows come from (for errors)


# ---- the table ------------------------------------------------------------------------------------------------

def label_files(folder: str | Path) -> list[Path]:
    """The table's files, one per video of the job, once the job has finished (every shard): never a temporary
    file a killed job left behind, never a table missing videos."""
    from glus.infer.jobs import SETTINGS, VideoJob

    settings = Path(folder) / SETTINGS
    if not settings.is_file():
        raise LabelTableError(f"{settings} not found: {folder} is not a pseudo-label folder. Fix: {MAKE_LABELS}")
    videos = json.loads(settings.read_text()).get("videos", [])
    try:
        files = VideoJob(folder, {}, videos).files()
    except GlusError as err:
        raise LabelTableError(f"{err} ({MAKE_LABELS})") from None
    if not files:
        raise LabelTableError(f"{folder}: no pseudo-label rows. Fix: {MAKE_LABELS}")
    return files


def read_groups(folder: str | Path, absent_label: float | None = None) -> list[LabelGroup]:
    """Every expression of the table, sorted by (split, video, exp_id). absent_label, when set, replaces the
    label of the rows whose target is not in the frame (present False)."""
    groups: dict[tuple[str, str, str], LabelGroup] = {}
    for file in label_files(folder):
        for group in _file_groups(file, absent_label):
            key = (group.split, group.video, group.exp_id)
            if key in groups:
                raise LabelTableError(f"{file}: expression {'/'.join(key)} also has rows in {groups[key].file}. "
                                      f"Fix: remove one of the two files ({MAKE_LABELS} into an empty folder)")
            groups[key] = group
    return [groups[k] for k in sorted(groups)]


def _file_groups(file: Path, absent_label: float | None) -> list[LabelGroup]:
    table = pq.read_table(file)
    absent = [c for c in LABEL_COLUMNS if c not in table.column_names]
    if absent:
        raise LabelTableError(f"{file}: column(s) {absent} missing (has {table.column_names}). Fix: {MAKE_LABELS} "
                              "with this version of glus")
    cols = {c: table.column(c).to_pylist() for c in LABEL_COLUMNS}
    labels = np.asarray(cols["iou"], np.float32)
    if absent_label is not None:
        labels = np.where(np.asarray(cols["present"], bool), labels, np.float32(absent_label))
    rows: dict[tuple[str, str, str], list[int]] = {}
    for r, key in enumerate(zip(cols["split"], cols["video"], cols["exp_id"])):
        rows.setdefault(key, []).append(r)
    out = []
    for (split, video, exp_id), idx in rows.items():
        idx = sorted(idx, key=lambda r: cols["frame_index"][r])
        group = LabelGroup(split, video, exp_id, np.asarray([cols["frame_index"][r] for r in idx], np.int64),
                           [cols["frame_name"][r] for r in idx], labels[idx], str(file))
        if not np.all(np.isfinite(group.labels)):
            raise LabelTableError(f"{file}: expression {split}/{video}/{exp_id} has non-finite labels. Fix: set "
                                  "data.init_args.absent_label for frames without the target, or rerun the job")
        out.append(group)
    return out


def check_groups(groups: list[LabelGroup], splits: dict[str, SplitIndex]) -> dict[tuple[str, str], str]:
    """Each group's video, expression and frames must exist in its split; returns {(split, video, exp_id): text}."""
    texts = {}
    by_video = {name: index.by_video() for name, index in splits.items()}
    fix = "Fix: data.init_args.root must be the data root the labels were made from"
    for g in groups:
        index = splits[g.split]
        video = index.videos.get(g.video)
        if video is None:
            raise LabelTableError(f"{g.file}: video {g.video} is not in split {g.split} under {index.root}. {fix}")
        by_id = {e.exp_id: e for e in by_video[g.split].get(g.video, [])}
        if g.exp_id not in by_id:
            raise LabelTableError(f"{g.file}: expression {g.exp_id} of video {g.video} is not in split {g.split}. "
                                  f"{fix}")
        bad = [int(f) for f, name in zip(g.frames, g.names) if not (0 <= f < len(video.frames))
               or video.frames[f] != name]
        if bad:
            raise LabelTableError(f"{g.file}: video {g.video}: frame_index {bad[:5]} do not name the video's frames "
                                  f"(it has {len(video.frames)}). {fix}")
        texts[(g.split, g.video, g.exp_id)] = by_id[g.exp_id].text
    return texts


# ---- dataset and data module ----------------------------------------------------------------------------------

class SelectorDataset(Dataset):
    def __init__(self, groups: list[LabelGroup], splits: dict[str, SplitIndex], length: int,
                 spec: SelectorClipSpec, seed: int = 0):
        if not groups:
            raise LabelTableError("the pseudo-label table holds no rows")
        self.groups, self.length, self.spec, self.seed = groups, length, spec, seed
        self.texts = check_groups(groups, splits)
        self.videos: dict[tuple[str, str], Video] = {(g.split, g.video): splits[g.split].videos[g.video]
                                                     for g in groups}

    def __len__(self) -> int:
        return self.length

    def draw(self, i: int) -> tuple[LabelGroup, int, list[int]]:
        """(expression, row of the target frame, reference frames) of sample i."""
        rng = rng_for(self.seed, i)
        group = self.groups[int(rng.integers(len(self.groups)))]
        row = int(rng.integers(len(group.frames)))
        num_frames = len(self.videos[(group.split, group.video)].frames)
        return group, row, train_context_frames(num_frames, self.spec.num_reference, rng)

    def __getitem__(self, i: int) -> dict:
        group, row, references = self.draw(i)
        video = self.videos[(group.split, group.video)]
        order = references + [int(group.frames[row])]  # the prompt's order: references, then the target
        unique = sorted(set(order))
        pixels = load_frames(video, unique)[[unique.index(f) for f in order]]
        return {"clip": clip_input(pixels, self.spec.clip_size, self.spec.clip_resize),
                "text": self.texts[(group.split, group.video, group.exp_id)],
                "label": float(group.labels[row]), "id": (group.split, group.video, group.exp_id),
                "frames": order, "index": i}


def collate_samples(items: list[dict]) -> dict:
    return {"clip": torch.stack([it["clip"] for it in items]),
            "texts": [it["text"] for it in items],
            "labels": torch.tensor([it["label"] for it in items], dtype=torch.float32),
            "ids": [it["id"] for it in items],
            "frames": [it["frames"] for it in items],
            "index": [it["index"] for it in items]}


def data_root(labels: str | Path) -> Path:
    """The data root of a pseudo-label job: the parent of the dataset folder its _job.json names."""
    job = Path(labels) / "_job.json"
    if not job.is_file():
        raise LabelTableError(f"{job} not found, so the data root is unknown. Fix: set data.init_args.root, or "
                              f"{MAKE_LABELS}")
    return Path(json.loads(job.read_text())["root"]).parent


class SelectorDataModule(GLUSDataModule):
    """Batches of selector samples; the run length, the global batch and the resumable order as GLUSDataModule."""

    collate = staticmethod(collate_samples)

    def __init__(self, labels: str, root: str | None = None, batch_size: int = 2, global_batch: int | None = None,
                 steps_per_epoch: int = 100, num_workers: int = 1, seed: int = 0,
                 clip: SelectorClipSpec | dict | None = None, absent_label: float | None = None):
        """labels: a `glus pseudolabel` output folder; root: the data root holding mevis/ etc. (default: the one
        the labels were made from, after their _job.json); absent_label: the label of frames without the target
        (default None: the table's IoU, as published)."""
        super().__init__(root=root or "", mix={}, batch_size=batch_size, global_batch=global_batch,
                         steps_per_epoch=steps_per_epoch, num_workers=num_workers, seed=seed)
        self.labels, self.absent_label = labels, absent_label
        self.clip = SelectorClipSpec(**clip) if isinstance(clip, dict) else (clip or SelectorClipSpec())

    def setup(self, stage: str | None = None) -> None:
        from glus.data.cache import load_split

        if self.dataset is None:
            root = self.root or data_root(self.labels)
            groups = read_groups(self.labels, self.absent_label)
            splits = {name: load_split(root, name) for name in sorted({g.split for g in groups})}
            self.dataset = SelectorDataset(groups, splits, self.total_samples(), self.clip, self.seed)


# ---- the LightningModule --------------------------------------------------------------------------------------

class SelectorModule(TrainingBase):
    def __init__(self, builder: SelectorBuilder, lr: float = 3e-4, betas: tuple[float, float] = (0.9, 0.95),
                 weight_decay: float = 0.0, warmup_steps: int = 100, total_steps: int = 2000, seed: int = 0,
                 gradient_checkpointing: bool = False):
        super().__init__()
        self.save_hyperparameters(ignore=["builder"])
        self.model, self.tokenizer = builder.build()
        if gradient_checkpointing:
            self.model.mllm.base_lm.gradient_checkpointing_enable()
        self.prompts = ScorePromptBuilder(self.tokenizer, self.model.mllm.tokens_per_frame(),
                                          self.model.num_reference, self.model.template)

    def to_prompts(self, batch: dict) -> ScorePromptBatch:
        """Questions and answers drawn per sample from (seed, sample index): the same prompt after a resume."""
        seed = self.hparams.seed
        items = [self.prompts.build(t, rng_for(seed, i, 1)) for t, i in zip(batch["texts"], batch["index"])]
        return self.prompts.collate(items).to(self.device)

    def training_step(self, batch: dict, batch_idx: int):
        prompts = self.to_prompts(batch)
        out = self.model(batch["clip"], prompts)
        losses = self.model.losses(out, batch["labels"])
        n = len(batch["texts"])
        for name, value in losses.items():
            self.log(f"train/{name}", value, prog_bar=name == "loss", batch_size=n)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=n)
        self.log_throughput(n, int(prompts.attention_mask.sum()))
        return losses["loss"]

    def setup(self, stage: str) -> None:
        """The data must prepare frames as the model reads them (see GLUSModule.setup)."""
        spec = getattr(getattr(self.trainer, "datamodule", None), "clip", None)
        if spec is None:
            return
        mllm = self.model.mllm
        expected = {"clip_size": mllm.vision_tower.config.image_size, "clip_resize": mllm.config.clip_resize,
                    "num_reference": self.model.num_reference}
        wrong = {k: (getattr(spec, k, None), v) for k, v in expected.items() if getattr(spec, k, None) != v}
        if wrong:
            raise GlusError("data.init_args.clip disagrees with the selector: " + ", ".join(
                f"{k} {got} (the model: {want})" for k, (got, want) in wrong.items()) +
                ". Fix: set the data's clip fields to the model's values (or link them with YAML anchors)")
