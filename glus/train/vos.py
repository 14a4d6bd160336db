"""Training the plain VOS path: semi-supervised clips of one split, a thin LightningModule, and at the end the
J&F of first-appearance propagation on a held-out split (`glus.eval.vos_eval`), per kind on synthetic data."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


from glus.data.vos_clips import VOSClipDataset, VOSClipSpec, collate_vos
from glus.errors import GlusError
from glus.model.vos import VOSBuilder, VOSClipBatch
from glus.train.base import TrainingBase
from glus.train.datamodule import GLUSDataModule


@dataclass
class VOSEvalSpec:
    root: str
    split: str = "mevis/valid_u"
    max_videos: int | None = None  # all videos by default


class VOSDataModule(GLUSDataModule):
    """Clips of one training split; run length, global batch and resumable order as GLUSDataModule. stream: each
    sample a new synthetic scene instead (glus.data.synth.stream, scenes of data_seed that no written split
    holds; root and split unused): for the segmenter stage and the synthetic VOS recipe, which would see the 256
    written training videos for tens of epochs."""

    collate = staticmethod(collate_vos)

    def __init__(self, root: str | None = None, split: str = "mevis/train", batch_size: int = 2,
                 global_batch: int | None = None, steps_per_epoch: int = 100, num_workers: int = 1, seed: int = 0,
                 clip: VOSClipSpec | dict | None = None, stream: bool = False, data_seed: int = 0):
        if not stream and not root:
            raise GlusError("data.init_args.root is not set. Fix: the data root holding the split (e.g. "
                            "data/synthetic), or stream: true for streamed synthetic scenes")
        super().__init__(root=root or "", mix={split: 1.0}, batch_size=batch_size, global_batch=global_batch,
                         steps_per_epoch=steps_per_epoch, num_workers=num_workers, seed=seed)
        self.split, self.stream, self.data_seed = split, stream, data_seed
        self.clip = VOSClipSpec(**clip) if isinstance(clip, dict) else (clip or VOSClipSpec())

    def setup(self, stage: str | None = None) -> None:
        from glus.data.cache import load_split
        from glus.data.synth.stream import StreamedVOSClipDataset

        per_step = self.samples_per_step()  # the clip spec's schedule counts optimiser steps
        if self.dataset is None and self.stream:
            self.dataset = StreamedVOSClipDataset(self.total_samples(), self.clip, self.seed, self.data_seed, per_step)
        elif self.dataset is None:
            index = load_split(self.root, self.split, on_error=self.on_error)
            self.dataset = VOSClipDataset(index, self.total_samples(), self.clip, self.seed, per_step)


class VOSModule(TrainingBase):
    def __init__(self, builder: VOSBuilder, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.999),
                 weight_decay: float = 0.0, warmup_steps: int = 100, total_steps: int = 2000, seed: int = 0,
                 evaluation: VOSEvalSpec | dict | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["builder"])
        self.model, self.tokenizer = builder.build()
        self.evaluation = VOSEvalSpec(**evaluation) if isinstance(evaluation, dict) else evaluation

    def training_step(self, batch: list[dict], batch_idx: int):
        """Clips one after another (their object counts differ), losses averaged over the clips."""
        total, logged = 0.0, {}
        for item in batch:
            clip = VOSClipBatch(item["sam"], item["masks"], item.get("points")).to(self.device)
            logits, routing = self.model.run_clip(clip)
            losses = self.model.losses(logits, clip, routing)
            total = total + losses["loss"] / len(batch)
            for name, value in losses.items():
                logged[name] = logged.get(name, 0.0) + value.detach() / len(batch)
        for name, value in logged.items():
            self.log(f"train/{name}", value, prog_bar=name == "loss", batch_size=len(batch))
        self.log_throughput(len(batch))
        return total

    def setup(self, stage: str) -> None:
        spec = getattr(getattr(self.trainer, "datamodule", None), "clip", None)
        size = self.model.segmenter.image_size
        if spec is not None and getattr(spec, "sam_size", size) != size:
            raise GlusError(f"data.init_args.clip.sam_size {spec.sam_size} disagrees with the model's SAM-2 input "
                            f"size {size}. Fix: set them equal (or link them with a YAML anchor)")
        prompts = [getattr(spec, "prompts", None) or {}] + [e.get("prompts") or {} for e in getattr(spec, "schedule",
                                                                                                    None) or []]
        if any(p > 0 for given in prompts for kind, p in given.items() if kind != "mask") and not self.model.prompted:
            raise GlusError("data.init_args.clip.prompts gives clicks or boxes but the model is not promptable. "
                            "Fix: set model.init_args.builder.init_args.prompted: true")

    def on_fit_end(self):
        if not (self.evaluation and self.trainer.is_global_zero):
            return
        from glus.eval.vos_eval import evaluate_vos, write_vos_results

        spec = self.evaluation
        result = evaluate_vos(self.model.eval(), spec.root, spec.split, max_videos=spec.max_videos)
        run_dir = Path(self.trainer.default_root_dir)
        result["steps"] = self.global_step
        write_vos_results(run_dir, result)
        print(f"VOS J&F after training: {result['jf']:.3f} (first-appearance propagation, {spec.split}) "
              f"-> {run_dir}/vos_metrics.json")
