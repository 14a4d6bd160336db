"""The GLUS LightningModule: losses, the contrastive bank, logging and evaluation hooks; the optimiser, schedule,
seeding, checkpoint state and export come from `TrainingBase`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from glus.data.samplers import rng_for
from glus.eval.metrics import aggregate_mean, by_kind
from glus.model.contrastive import TokenBank, TokenKey, gather_across_ranks, object_contrastive_loss
from glus.model.glus import ClipBatch
from glus.model.mllm import PromptBuilder
from glus.model.mllm.prompt import IGNORE_INDEX, pad_right
from glus.train.base import TrainingBase
from glus.vocabulary import OBJECT_CLASSES

BLANK_TEXT = "object"  # the control run's expression: says nothing about which object
EXPRESSION_TARGETS = ("expression", "caption", "grounded", "name", "name_place")
PLACED_TARGETS = ("grounded", "name_place")  # one target per query frame: the words and where the object is
NAME_WORDS = {word for colour, shape, _ in OBJECT_CLASSES for word in (colour, shape)}  # the grey bar's too


def name_words(caption: str) -> str:
    """The colour and shape words of a synthetic caption, in order ("the red circle moving left and the blue
    square that stops" -> "red circle blue square"); a text with none (not synthetic) stays as it is."""
    words = [w for w in caption.split() if w in NAME_WORDS]
    return " ".join(words) if words else caption


def place(mask_HW: torch.Tensor) -> str:
    """Where a mask lies in its frame, in words: "at the top left", "at the middle centre"; "out of view"."""
    ys, xs = torch.nonzero(mask_HW, as_tuple=True)
    if len(xs) == 0:
        return "out of view"
    h, w = mask_HW.shape
    row = ("top", "middle", "bottom")[min(int(3 * ys.float().mean() / h), 2)]
    col = ("left", "centre", "right")[min(int(3 * xs.float().mean() / w), 2)]
    return f"at the {row} {col}"


@dataclass
class EvalSpec:
    root: str                      # data root holding the split
    split: str = "mevis/valid_u"
    val_videos: int = 2            # videos scored at the end of every epoch (a quick held-out J&F)
    every_n_epochs: int = 1
    max_videos: int | None = None  # final evaluation: all videos by default
    overlays: int = 4              # overlay GIFs written after training
    initial: bool = True           # score the untrained model too


class GLUSModule(TrainingBase):
    def __init__(self, builder, lr: float = 3e-4, betas: tuple[float, float] = (0.9, 0.95), weight_decay: float = 0.0,
                 warmup_steps: int = 100, total_steps: int = 3000, num_context: int = 4, num_query: int = 4,
                 label_mode: str = "seg", blank_text: bool = False, seed: int = 0,
                 evaluation: EvalSpec | None = None, gradient_checkpointing: bool = False,
                 contrastive_bank: int = 512, contrastive_negatives: int = 128, contrastive_tau: float = 0.07,
                 contrastive_splits: tuple[str, ...] = ("mevis/",), contrastive_hard_negatives: bool = False,
                 expression_target: str = "expression", segmentation: bool = True):
        """expression_target: what the expression loss (`loss_weights.expression`) asks the [SEG] state to name:
        the expression's own words, or "caption": the referred objects in full (colour, shape and motion), where
        the data has captions (the synthetic data does; other expressions keep their own words), or "grounded":
        the caption and where the objects are in each query frame ("at the top left", from the ground truth), or
        "name": only the colour and shape words of the caption (what the [SEG] must find; `name_words`), or
        "name_place": the name and where the objects are in each query frame (which of two look-alikes). A
        pretrained LISA learnt to name and place what it sees from LLaVA's data; the tiny LLM learns it here.
        segmentation: False trains the multimodal LM alone (CE at [SEG] and the expression loss; SAM-2 and the
        [SEG] projection frozen and never run): the alignment stage of the embedded default, whose export a
        GLUS run starts from (TinyGLUSBuilder's mllm_init)."""
        if expression_target not in EXPRESSION_TARGETS:
            raise ValueError(f"expression_target must be one of {EXPRESSION_TARGETS}, got {expression_target!r}")
        super().__init__()
        self.save_hyperparameters(ignore=["builder"])
        self.model, self.tokenizer = builder.build()
        if not segmentation:
            self.model.language_only()
        if gradient_checkpointing:
            self.model.mllm.base_lm.gradient_checkpointing_enable()
        self.prompts = PromptBuilder(self.tokenizer, tokens_per_frame=self.model.mllm.tokens_per_frame(),
                                     num_context=num_context, label_mode=label_mode, template=self.model.template)
        self.evaluation = EvalSpec(**evaluation) if isinstance(evaluation, dict) else evaluation
        self.bank = TokenBank(contrastive_bank)
        self.results: dict = {}
        self.captions: dict = {}  # (split, video, exp_id) -> caption, read in setup when the target asks for them

    # ---- training -------------------------------------------------------------------------------------

    def text(self, text: str) -> str:
        return BLANK_TEXT if self.hparams.blank_text else text

    def to_clip_batch(self, batch: dict) -> ClipBatch:
        q, seed = self.hparams.num_query, self.hparams.seed
        texts = [self.text(t) for t in batch["texts"]]
        items = [self.prompts.build(t, q, rng_for(seed, i, 1)) for t, i in zip(texts, batch["index"])]
        expression_ids = self.loss_targets(batch, texts) if self.model.loss_weights.expression > 0 else None
        motion = None
        if "object_masks" in batch:
            motion = self.model.motion_targets(batch["object_masks"], batch["object_motions"]).to(self.device)
        return ClipBatch(batch["clip"], batch["sam"], self._to_device(self.prompts.collate(items, q)),
                         batch["video_index"].to(self.device), [m.to(self.device) for m in batch["masks"]],
                         {"ids": batch["ids"]}, expression_ids, motion)

    def loss_targets(self, batch: dict, texts: list[str]) -> torch.Tensor:
        """Token ids the expression loss asks the [SEG] states to name: (E, T), or (E, Q, T) when placed."""
        target = self.hparams.expression_target
        if target != "expression" and "captions" in batch:  # streamed clips carry theirs
            texts = batch["captions"]
        elif target != "expression":
            texts = [self.captions.get(key[:3], text) for key, text in zip(batch["ids"], texts)]
        if target in ("name", "name_place"):
            texts = [name_words(t) for t in texts]
        if target not in PLACED_TARGETS:
            return pad_right([self.prompts.expression_tokens(t) for t in texts], IGNORE_INDEX)[0]
        rows = [self.prompts.expression_tokens(f"{text} {place(mask)}")
                for text, masks in zip(texts, batch["masks"]) for mask in masks]
        ids = pad_right(rows, IGNORE_INDEX)[0]
        return ids.view(len(texts), -1, ids.size(1))

    def _to_device(self, prompts):
        for name in ("input_ids", "attention_mask", "labels", "seg_positions"):
            setattr(prompts, name, getattr(prompts, name).to(self.device))
        return prompts

    def training_step(self, batch: dict, batch_idx: int):
        clip = self.to_clip_batch(batch)
        if self.hparams.segmentation:
            out = self.model(clip)
            losses = self.model.losses(out, clip)
        else:  # the alignment stage: the multimodal LM alone, SAM-2 never runs
            lang = self.model.language(clip)
            losses = self.model.language_losses(lang.lm_logits, lang.lm_targets, lang.seg_logits, clip,
                                                lang.motion_logits)
        if self.hparams.segmentation and self.model.loss_weights.contrastive > 0:
            contrastive = self.contrastive(out.seg_embeddings, batch)
            if contrastive is not None:
                losses["contrastive"] = contrastive
                losses["loss"] = losses["loss"] + self.model.loss_weights.contrastive * contrastive
        n = len(batch["texts"])
        for name, value in losses.items():
            self.log(f"train/{name}", value, prog_bar=name == "loss", batch_size=n)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=n)
        self.log_throughput(n, int(clip.prompts.attention_mask.sum()))
        return losses["loss"]

    def contrastive(self, seg_EQD: torch.Tensor, batch: dict):
        """The object contrastive loss on expressions of the configured splits (published: MeViS only)."""
        hp = self.hparams
        rows, keys = [], []
        for e, ((split, vid, exp_id, objs), frames) in enumerate(zip(batch["ids"], batch["frames"])):
            if split.startswith(tuple(hp.contrastive_splits)):
                for q, frame in enumerate(frames):
                    rows.append((e, q))
                    keys.append(TokenKey(f"{split}/{vid}", exp_id, int(frame), tuple(objs)))
        loss = None
        anchors = seg_EQD.new_zeros(0, seg_EQD.size(-1))
        if rows:
            anchors = torch.stack([seg_EQD[e, q] for e, q in rows])
            loss = object_contrastive_loss(anchors, keys, self.bank, hp.contrastive_negatives, hp.contrastive_tau,
                                           hard_negatives=hp.contrastive_hard_negatives)
        self.bank.add(*gather_across_ranks(anchors, keys))  # on every rank, even one without anchors
        return loss

    def extra_state(self) -> dict:
        return {"token_bank": self.bank}  # exact resume: the bank is part of the state

    # ---- evaluation -----------------------------------------------------------------------------------

    def score(self, max_videos: int | None, keep: int = 0):
        from glus.data.cache import load_split

        index = load_split(self.evaluation.root, self.evaluation.split)
        return fit_report(self.model, self.prompts, index, self.hparams.num_context, self.hparams.num_query,
                          self.text, max_videos, keep)

    @classmethod
    def recipe_settings(cls, recipe: dict) -> dict:
        """This module's arguments as a recipe (an export's recipe.yaml) sets them, its defaults where it is
        silent: what `glus validate` needs to score an export as its fit did."""
        import inspect

        defaults = {k: p.default for k, p in inspect.signature(cls).parameters.items()}
        return {**defaults, **recipe.get("model", {}).get("init_args", {})}

    def setup(self, stage: str) -> None:
        """The data must prepare frames as the model reads them (a recipe links the sizes; this catches a
        recipe or an override that unlinks them); a caption target reads the training splits' captions."""
        datamodule = getattr(self.trainer, "datamodule", None)
        spec = getattr(datamodule, "clip", None)
        if spec is None:
            return
        if self.hparams.expression_target != "expression" and not getattr(datamodule, "streamed", False):
            self.captions = read_captions(datamodule, self.hparams.expression_target)
        hp, mllm, seg = self.hparams, self.model.mllm, self.model.segmenter
        expected = {"clip_size": mllm.image_size, "clip_resize": mllm.config.clip_resize,
                    "sam_size": seg.image_size, "num_context": hp.num_context, "num_query": hp.num_query}
        if self.model.loss_weights.motion > 0:
            from glus.vocabulary import DENSE_LABELS

            classes = {len(v): k for k, v in DENSE_LABELS.items()}
            expected["object_motions"] = True
            expected["object_labels"] = classes[self.model.motion_head.out_features]
        wrong = {k: (getattr(spec, k), v) for k, v in expected.items() if getattr(spec, k) != v}
        if wrong:
            from glus.errors import GlusError

            raise GlusError("data.init_args.clip disagrees with the model: " + ", ".join(
                f"{k} {got} (the model: {want})" for k, (got, want) in wrong.items()) +
                ". Fix: set the data's clip fields to the model's values (or link them with YAML anchors)")

    def on_fit_start(self):
        if self.evaluation and self.evaluation.initial and self.trainer.is_global_zero and self.global_step == 0:
            self.results["initial"], _, _ = self.score(self.evaluation.max_videos)
            print(f"J&F at initialisation: {self.results['initial']['jf']:.3f}")

    def on_train_batch_end(self, outputs, batch, batch_idx: int):
        spec = self.evaluation
        steps = self.trainer.datamodule.steps_per_epoch * spec.every_n_epochs if spec else 0
        last_micro = (batch_idx + 1) % self.trainer.accumulate_grad_batches == 0
        if spec and spec.val_videos and last_micro and self.global_step % steps == 0:
            metrics, _, _ = self.score(spec.val_videos)
            for logger in self.loggers:  # once per evaluation, at this step (self.log would repeat it every step)
                logger.log_metrics({"val/j": metrics["j"], "val/f": metrics["f"], "val/jf": metrics["jf"]},
                                   step=self.global_step)

    def on_fit_end(self):
        if not (self.evaluation and self.trainer.is_global_zero):
            return
        final, scores, kept = self.score(self.evaluation.max_videos, keep=self.evaluation.overlays)
        run_dir = Path(self.trainer.default_root_dir)
        metrics = {**final, **({"initial": self.results["initial"]} if "initial" in self.results else {}),
                   "split": self.evaluation.split, "blank_text": self.hparams.blank_text, "steps": self.global_step}
        write_results(run_dir, metrics, scores, kept)
        print(f"J&F after training: {final['jf']:.3f} (J {final['j']:.3f}, F {final['f']:.3f}) -> {run_dir}/metrics.json")


def fit_report(model, prompts: PromptBuilder, index, num_context: int, num_query: int, text=lambda t: t,
               max_videos: int | None = None, keep: int = 0) -> tuple[dict, list, list]:
    """The J&F `glus fit` reports (at its start, its validations and its end) and `glus validate` reports of an
    export: clip-wise prediction (`glus.eval.chunked`) on a split with ground truth, the mean over expressions
    and, on synthetic data, per kind. text: what the model reads for an expression's text (the blank-text
    control's fit reads "object"). Returns (metrics, per-expression scores, kept predictions for overlays)."""
    from glus.data.masks import MaskReader
    from glus.eval.chunked import evaluate_split

    scores, kept = evaluate_split(model, prompts, index, MaskReader(index), num_context, num_query, max_videos,
                                  lambda e: text(e.text), keep)
    metrics = aggregate_mean(scores)
    if index.kinds():
        metrics["by_kind"] = by_kind(scores, index.kinds())
    return metrics, scores, kept


def read_captions(datamodule, target: str) -> dict:
    """{(split, video, exp_id): caption} of the training splits; an error where none has captions (a caption
    target on data without them would silently train on the expressions' own words)."""
    captions = {(split.name, *key): text for split in datamodule.dataset.splits
                for key, text in split.captions().items()}
    if not captions:
        from glus.errors import GlusError

        raise GlusError(f"model.init_args.expression_target is {target!r} but no split of {datamodule.root} "
                        f"({', '.join(datamodule.mix)}) has captions. Fix: regenerate synthetic data with `glus data "
                        "synth` (older data has none), or set expression_target: expression")
    return captions


def write_results(run_dir: Path, metrics: dict, scores, kept) -> None:
    from glus.data.frames import load_frames
    from glus.eval.evaluate import write_scores_csv
    from glus.eval.overlay import write_overlay
    from glus.io import atomic_write_json

    atomic_write_json(run_dir / "metrics.json", metrics)
    write_scores_csv(run_dir / "per_expression.csv", scores)
    for video, expr, pred, gt in kept:
        frames = load_frames(video, range(len(video.frames)))
        name = f"{video.id}_{expr.exp_id}".replace("/", "_")
        write_overlay(run_dir / "overlays" / f"{name}.gif", frames, pred, gt, caption=expr.text)
