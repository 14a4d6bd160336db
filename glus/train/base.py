"""What every trained model of glus shares (GLUS now; the key-frame selector and the plain VOS model next):
a thin LightningModule around a plain `nn.Module` (`self.model`) and its tokenizer, with the optimiser and
its parameter groups, the published schedule, per-step seeding for exact resume, throughput logging, extra
checkpoint state, and the export that inference loads (`glus.model.weights.load`)."""
from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import torch

from glus.data.samplers import rng_for
from glus.train.schedule import warmup_linear


class TrainingBase(L.LightningModule):
    """Subclasses set `self.model` (and `self.tokenizer`) in __init__, and call `self.save_hyperparameters`
    with lr, betas, weight_decay, warmup_steps, total_steps and seed among them."""

    def param_groups(self) -> list[dict]:
        """Optimiser groups; by default one group of every trainable parameter. Override to give parts their
        own learning rate or weight decay."""
        return [{"params": [p for p in self.model.parameters() if p.requires_grad]}]

    def configure_optimizers(self):
        hp = self.hparams
        # foreach: one kernel per group of tensors (torch's default on CUDA, not on CPU, where it also saves time)
        optimizer = torch.optim.AdamW(self.param_groups(), lr=hp.lr, betas=tuple(hp.betas),
                                      weight_decay=hp.weight_decay, foreach=True)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_linear(step, hp.warmup_steps, hp.total_steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # Dropout draws from the global generator: seeding it from (seed, micro-step) makes every step's randomness
        # a function of the step, so that a run resumed from a checkpoint repeats an uninterrupted run exactly.
        acc = self.trainer.accumulate_grad_batches
        step = self.global_step * acc + batch_idx % acc
        torch.manual_seed(int(rng_for(self.hparams.seed, step, 2).integers(2 ** 62)))

    def log_throughput(self, samples: int, tokens: int | None = None) -> None:
        now = time.perf_counter()
        last = getattr(self, "_tick", None)
        if last is not None:
            dt = max(now - last, 1e-6)
            self.log("perf/samples_per_s", samples / dt, batch_size=samples)
            if tokens is not None:
                self.log("perf/tokens_per_s", tokens / dt, batch_size=samples)
            if torch.cuda.is_available():
                self.log("perf/gpu_mem_gb", torch.cuda.max_memory_allocated() / 2 ** 30, batch_size=samples)
        self._tick = now

    # ---- state beyond the weights ----------------------------------------------------------------------------

    def extra_state(self) -> dict:
        """Objects a checkpoint must hold for an exact resume besides weights and optimiser (e.g. a token bank):
        {name: object with state_dict() / load_state_dict()}."""
        return {}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        for name, obj in self.extra_state().items():
            checkpoint[name] = obj.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        for name, obj in self.extra_state().items():
            if name in checkpoint:
                obj.load_state_dict(checkpoint[name])

    def export(self, out: str | Path, recipe: dict) -> Path:
        """What inference loads: adapter, trained tensors, recipe and tokenizer (glus.model.weights.export)."""
        from glus.model.weights.export import export_model

        return export_model(self.model, self.tokenizer, out, recipe)
