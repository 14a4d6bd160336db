"""LightningDataModule: datasets mixed by weight, clips prepared in workers, resumable sample order."""
from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader, Sampler

from glus.data.clips import ClipDataset, ClipSpec, collate_clips


class ResumableSampler(Sampler):
    """Sample indices offset, offset+1, ... < total, split over ranks: the k-th micro-batch of a run always holds
    the same samples, whatever happened before. A resumed run starts at the restored optimiser step's offset.

    The whole run is one Lightning epoch: Lightning cannot restart a plain DataLoader mid-epoch exactly, and
    GLUS' "epochs" are only a unit of checkpointing and validation (`steps_per_epoch` sets that interval).
    """

    def __init__(self, total: int, offset: int = 0, rank: int = 0, world: int = 1):
        self.total, self.offset, self.rank, self.world = total, offset, rank, world

    def __iter__(self):
        return iter(range(self.offset + self.rank, self.total, self.world))

    def __len__(self) -> int:  # the whole run: Lightning stops at max_steps (or when this runs out)
        return len(range(self.rank, self.total, self.world))


class GLUSDataModule(L.LightningDataModule):
    collate = staticmethod(collate_clips)  # subclasses with other samples (selector, VOS) set their own

    def __init__(self, root: str, mix: dict[str, float], batch_size: int = 2, global_batch: int | None = None,
                 steps_per_epoch: int = 100, num_workers: int = 2, seed: int = 0, on_error: str = "fail",
                 clip: ClipSpec | None = None):
        """mix: {split name: weight}, e.g. {"mevis/train": 1, "refytvos/train": 1} (GLUS-S).
        batch_size: the micro-batch per device; global_batch: videos per optimiser step over all devices (None:
        no accumulation). `glus fit` sets the Trainer's accumulate_grad_batches from the two (glus.train.batch);
        a Trainer built by hand must do the same (`plan_batch`), since a DataModule cannot change it."""
        super().__init__()
        self.root, self.mix, self.batch_size, self.global_batch = root, dict(mix), batch_size, global_batch
        self.steps_per_epoch = steps_per_epoch
        self.num_workers, self.seed, self.on_error = num_workers, seed, on_error
        self.clip = ClipSpec(**clip) if isinstance(clip, dict) else (clip or ClipSpec())
        self.dataset = None

    def setup(self, stage: str | None = None) -> None:
        from glus.data.cache import load_split

        if self.dataset is None:
            splits = [load_split(self.root, name, on_error=self.on_error) for name in self.mix]
            self.dataset = ClipDataset(splits, list(self.mix.values()), self.total_samples(), self.clip,
                                       self.seed)

    def samples_per_step(self) -> int:
        world = self.trainer.world_size if self.trainer else 1
        accumulate = self.trainer.accumulate_grad_batches if self.trainer else 1
        return self.batch_size * accumulate * world

    def total_samples(self) -> int:
        """Samples of the whole run: max_steps optimiser steps, or max_epochs GLUS epochs when no max_steps."""
        trainer = self.trainer
        if trainer and trainer.max_steps > 0:
            steps = trainer.max_steps
        else:
            steps = self.steps_per_epoch * max(1, (trainer.max_epochs or 1) if trainer else 1)
        return steps * self.samples_per_step()

    def train_dataloader(self) -> DataLoader:
        # called after a checkpoint is restored: global_step is the resumed run's
        rank = self.trainer.global_rank if self.trainer else 0
        world = self.trainer.world_size if self.trainer else 1
        offset = (self.trainer.global_step if self.trainer else 0) * self.samples_per_step()
        sampler = ResumableSampler(self.total_samples(), offset, rank, world)
        return DataLoader(self.dataset, batch_size=self.batch_size, sampler=sampler,
                          collate_fn=self.collate, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, multiprocessing_context="fork" if self.num_workers else None)


class StreamedSynthDataModule(GLUSDataModule):
    """Training clips of synthetic scenes drawn on demand, each sample a new scene (glus.data.synth.stream):
    for the embedded default and its stages, which learn the 256 written training videos by heart. No validation
    split: GLUS evaluates on the written valid_u (model.evaluation), a stage with `glus study naming-probe`."""
    streamed = True  # GLUSModule: the samples carry their captions

    def __init__(self, batch_size: int = 2, global_batch: int | None = None, steps_per_epoch: int = 100,
                 num_workers: int = 2, seed: int = 0, data_seed: int = 0, clip: ClipSpec | None = None,
                 first_kinds: tuple[str, ...] = (), temporal_rate: float = 0.0):
        """data_seed: the generator's seed (the written data's is 0; the stream's scenes are never among them).
        first_kinds: expression kinds each clip takes before the others (`StreamedClipDataset`). temporal_rate:
        the share of temporal scenes (event, crossing, order: `glus.data.synth.temporal`)."""
        super().__init__("", {}, batch_size, global_batch, steps_per_epoch, num_workers, seed, clip=clip)
        self.data_seed, self.first_kinds, self.temporal_rate = data_seed, tuple(first_kinds), temporal_rate

    def setup(self, stage: str | None = None) -> None:
        from glus.data.synth.stream import StreamedClipDataset

        if self.dataset is None:
            self.dataset = StreamedClipDataset(self.total_samples(), self.clip, self.seed, self.data_seed,
                                               self.first_kinds, self.temporal_rate)
