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

from glus.errors import GlusError
from glus.io import atomic_path
from glus.train.preflight import MissingInputs, check_inputs


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


# The seeds of a recipe: Lightning's global seed, the module's (prompt templates, dropout), its builder's
# (initialisation) and the data's (sampling).
SEED_FIELDS = ("seed_everything", "model.init_args.seed", "model.init_args.builder.init_args.seed",
               "data.init_args.seed")


class GLUSCLI(LightningCLI):
    def __init__(self, *args, runs_root: Path, name: str, run_dir: Path | None = None, wandb: str = "offline",
                 seed: int | None = None, **kwargs):
        """run_dir: the folder of a resumed run; without one, a new run gets RUNS_ROOT/NAME/<time>, made only
        once the parsed recipe (overrides included) has passed the input check. seed: one seed for every seed
        field of the recipe (`SEED_FIELDS`)."""
        self.runs_root, self.name, self.run_dir, self.wandb, self.seed = runs_root, name, run_dir, wandb, seed
        super().__init__(*args, **kwargs)

    def parse_arguments(self, parser, args) -> None:
        """Check the inputs of the recipe as parsed (every --config merged, every override applied) right away:
        the message is then the only output of a recipe that cannot start (no seed line, no run folder)."""
        super().parse_arguments(parser, args)
        if self.seed is not None:
            self._set_seeds(self.seed)
        check_inputs(yaml.safe_load(parser.dump(self.config, skip_unset=False, skip_validation=True))["fit"])
        self._plan_batch()

    def _set_seeds(self, seed: int) -> None:
        """Every seed field the recipe has gets `seed` (a builder's initialisation seed cannot be overridden from
        the command line: the builder is a free class_path, not a typed argument)."""
        cfg = self.config["fit"]
        for key in SEED_FIELDS:
            if key == "seed_everything" or cfg.get(key) is not None:
                cfg[key] = seed

    def _plan_batch(self) -> None:
        """Gradient accumulation from the recipe's global batch, micro-batch and this machine's devices."""
        from glus.train.batch import device_count, plan_batch

        cfg = self.config["fit"]
        data = cfg["data"]
        data = data.get("init_args", data) if hasattr(data, "get") else data
        if data is None or "batch_size" not in data:
            return
        trainer = cfg["trainer"]
        world = device_count(trainer["accelerator"], trainer["devices"], trainer["num_nodes"])
        plan = plan_batch(data.get("global_batch"), data["batch_size"], world)
        set_by_hand = trainer["accumulate_grad_batches"]
        if data.get("global_batch") is not None and set_by_hand not in (None, 1, plan.accumulation):
            raise GlusError(f"trainer.accumulate_grad_batches {set_by_hand} contradicts data.global_batch "
                                f"({plan.describe()}). Fix: leave accumulate_grad_batches out and set the global batch")
        if data.get("global_batch") is not None:
            trainer["accumulate_grad_batches"] = plan.accumulation
        print(plan.describe() if data.get("global_batch") is not None else
              f"batch: {world} device(s) x micro-batch {data['batch_size']} x accumulation {set_by_hand or 1}")

    def before_instantiate_classes(self) -> None:
        if self.run_dir is None:  # not before the input check: a recipe that cannot start leaves no run behind
            self.run_dir = new_run_dir(self.runs_root, self.name)
        print(f"run folder: {self.run_dir}")

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


def recipe_files(argv: list[str]) -> list[str]:
    """The --config files among LightningCLI arguments (`--config X` or `--config=X`, in order), each checked
    here: LightningCLI would answer a missing one with its whole usage text."""
    files = []
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            files.append(arg.partition("=")[2])
        elif arg == "--config" and i + 1 < len(argv):
            files.append(argv[i + 1])
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise MissingInputs(f"recipe file(s) not found: {', '.join(missing)}. Fix: pass --config "
                            "recipes/<name>.yaml (one per job in recipes/, e.g. recipes/synthetic.yaml)")
    return files


def resume_point(runs_root: Path, name: str, resume: str) -> tuple[Path, Path]:
    """(run folder, checkpoint) of `--resume latest` or `--resume RUN_FOLDER`."""
    run_dir = (runs_root / name / "latest").resolve() if resume == "latest" else Path(resume).resolve()
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        return run_dir, last
    # a kill between writing a checkpoint and relinking last.ckpt leaves only the step-numbered file
    saved = sorted(run_dir.glob("checkpoints/*step=*.ckpt"), key=lambda p: int(p.stem.split("step=")[1]))
    if not saved:
        raise MissingInputs(f"nothing to resume in {run_dir}: no checkpoints/last.ckpt or checkpoints/*step=*.ckpt. "
                            f"Fix: --resume a run folder that holds a checkpoint (a folder of {runs_root / name}, "
                            "or `latest`: its newest), or leave --resume out to start a new run")
    return run_dir, saved[-1]


def fit(argv: list[str], runs_root: str = "runs", resume: str | None = None, name: str | None = None,
        wandb: str = "offline", seed: int | None = None) -> GLUSCLI:
    """Train a recipe: `argv` are LightningCLI arguments (--config recipes/X.yaml, overrides). Every missing
    input is reported before anything is written. `seed` replaces every seed of the recipe (`SEED_FIELDS`)."""
    files = recipe_files(argv)
    name = name or (Path(files[0]).stem if files else "run")
    run_dir, ckpt = None, []
    if resume:
        run_dir, last = resume_point(Path(runs_root), name, resume)
        ckpt = ["--ckpt_path", str(last)]
    sys.argv = sys.argv[:1]  # the arguments are passed explicitly (LightningCLI warns when both are set)
    cli = GLUSCLI(args=["fit", *argv, *ckpt], runs_root=Path(runs_root), name=name, run_dir=run_dir, wandb=wandb,
                  seed=seed, save_config_kwargs={"overwrite": True}, auto_configure_optimizers=False)
    if cli.trainer.is_global_zero:
        recipe = yaml.safe_load(cli.parser.dump(cli.config, skip_unset=False))["fit"]
        out = cli.model.export(cli.run_dir / "export", recipe)
        print(f"export (for glus predict): {out}")
    return cli
