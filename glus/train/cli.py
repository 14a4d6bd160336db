"""`glus fit`: LightningCLI over the YAML recipes, with run folders, loggers, checkpoints and resume."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch
import yaml
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.cli import LightningCLI

from glus.io import atomic_path


class StepProgressBar(RichProgressBar):
    """A whole run is one Lightning epoch (GLUS' "epochs" are only checkpoint and validation intervals), so
    Lightning's "Epoch 0/-2" would mislead: the bar is labelled by what it counts, optimiser steps."""

    def _get_train_description(self, current_epoch: int) -> str:
        return "steps"


class AtomicCheckpointIO(TorchCheckpointIO):
    """A checkpoint appears whole or not at all: written to a temporary file, then renamed (a kill -9 during
    the write leaves the previous last.ckpt intact)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


def new_run_dir(root: Path, name: str) -> Path:
    run = root / name / time.strftime("%Y%m%d-%H%M%S")
    while run.exists():  # two runs in one second
        run = run.with_name(run.name + "x")
    run.mkdir(parents=True)
    latest = root / name / "latest"
    tmp = latest.with_name(".latest.tmp")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(run.name)
    os.replace(tmp, latest)
    return run


class GLUSCLI(LightningCLI):
    def __init__(self, *args, run_dir: Path, wandb: str = "offline", **kwargs):
        self.run_dir, self.wandb = run_dir, wandb
        super().__init__(*args, **kwargs)

    def before_instantiate_classes(self) -> None:
        from glus.train.preflight import check_inputs

        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False, skip_check=True))["fit"]
        check_inputs(config)

    def instantiate_trainer(self, **kwargs):
        from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
        from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

        loggers = [CSVLogger(self.run_dir, name="", version="csv", flush_logs_every_n_steps=10),
                   TensorBoardLogger(self.run_dir, name="", version="tensorboard")]
        if self.wandb != "disabled":
            from lightning.pytorch.loggers import WandbLogger

            loggers.append(WandbLogger(save_dir=str(self.run_dir), project="glus", offline=self.wandb == "offline"))
        # every `steps_per_epoch` optimiser steps (GLUS' epoch): one checkpoint, and last.ckpt linking to it
        every = getattr(self.datamodule, "steps_per_epoch", 100)
        callbacks = [ModelCheckpoint(dirpath=self.run_dir / "checkpoints", save_last="link", save_top_k=1,
                                     every_n_train_steps=every),
                     StepProgressBar(leave=True), LearningRateMonitor(logging_interval="step")]
        kwargs["callbacks"] = list(kwargs.get("callbacks") or []) + callbacks
        kwargs.update(logger=loggers, default_root_dir=str(self.run_dir))
        trainer = super().instantiate_trainer(**kwargs)
        if not trainer.strategy.checkpoint_io.__class__.__name__.startswith("DeepSpeed"):
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer


def fit(argv: list[str], runs_root: str = "runs", resume: str | None = None, name: str | None = None,
        wandb: str = "offline") -> GLUSCLI:
    """Train a recipe: `argv` are LightningCLI arguments (--config recipes/X.yaml, overrides)."""
    config = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"), None)
    name = name or (Path(config).stem if config else "run")
    root = Path(runs_root)
    ckpt = []
    if resume:
        run_dir = (root / name / "latest").resolve() if resume == "latest" else Path(resume).resolve()
        last = run_dir / "checkpoints" / "last.ckpt"
        if not last.is_file():  # a kill between writing a checkpoint and relinking last.ckpt
            saved = sorted(run_dir.glob("checkpoints/*step=*.ckpt"), key=lambda p: int(p.stem.split("step=")[1]))
            if not saved:
                raise FileNotFoundError(f"nothing to resume: no checkpoint in {run_dir / 'checkpoints'}")
            last = saved[-1]
        ckpt = ["--ckpt_path", str(last)]
    else:
        run_dir = new_run_dir(root, name)
    print(f"run folder: {run_dir}")
    sys.argv = sys.argv[:1]  # the arguments are passed explicitly (LightningCLI warns when both are set)
    cli = GLUSCLI(args=["fit", *argv, *ckpt], run_dir=run_dir, wandb=wandb, save_config_kwargs={"overwrite": True},
                  auto_configure_optimizers=False)
    if cli.trainer.is_global_zero:
        from glus.train.export import export_model

        recipe = yaml.safe_load(cli.parser.dump(cli.config, skip_none=False))["fit"]
        out = export_model(cli.model, run_dir / "export", recipe)
        print(f"export (for glus predict): {out}")
    return cli
