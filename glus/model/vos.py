"""The plain VOS path: the SAM-2 segmenter and a memory, without the language model.

Given masks on one frame (the LLM's at a key frame, or a user's), the segmenter propagates them through the
video: the given frame is written to memory as a conditioning frame (SAM-2's `_use_mask_as_output`), every
other frame is decoded without a prompt from its memory-conditioned features (SAM-2's tracking step). The
objects of one video run as one batch with `joint_objects`, so that memories which read the other objects'
masks (gated linear, MCA) can.

Training (`glus.train.vos`) is semi-supervised VOS on clips: the first frame's ground truth in, the masks of the
following frames supervised with the GLUS mask losses (BCE + Dice).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from glus.model.losses import LossWeights, bce_per_mask, dice_per_mask
from glus.model.memory import NoMemory
from glus.model.segmenter import SAM2Segmenter
from glus.model.segmenter.rds import RoutePrior
from glus.model.segmenter.sam2_segmenter import FrameFeatures


@dataclass
class VOSClipBatch:
    """One video's clip: SAM inputs (T, 3, S, S), its objects' masks (N, T, H, W) at the original size, and how
    the first frame is given: None (its masks) or clicks/box corners as SAM-2 points ((N, P, 2) coords in input
    pixels, (N, P) labels; `glus.data.vos_clips.first_frame_prompt`)."""

    sam_frames: torch.Tensor
    masks: torch.Tensor
    points: tuple[torch.Tensor, torch.Tensor] | None = None

    def to(self, device) -> "VOSClipBatch":
        points = None if self.points is None else tuple(p.to(device) for p in self.points)
        return VOSClipBatch(self.sam_frames.to(device), self.masks.to(device), points)


class VOSModel(nn.Module):
    def __init__(self, segmenter: SAM2Segmenter, loss_weights: LossWeights | None = None,
                 prompted: bool = False):
        """prompted: training clips may start from clicks or a box (promptable pretraining), decoded with an
        empty memory; otherwise every pass starts from a given mask."""
        super().__init__()
        self.segmenter = segmenter
        self.loss_weights = loss_weights or LossWeights()
        self.prompted = prompted
        if not prompted:
            self._freeze_empty_memory_reads()

    def _freeze_empty_memory_reads(self) -> None:
        """A pass that starts from a given mask never reads an empty memory: its "no memory" parameters would get
        no gradient (and DDP refuses parameters that get none). NoMemory is always empty."""
        memory, sam = self.segmenter.memory, self.segmenter.sam
        if isinstance(memory, NoMemory):
            return
        for p in [getattr(memory, "no_memory", None), sam.no_mem_embed, sam.no_mem_pos_enc]:
            if isinstance(p, nn.Parameter):
                p.requires_grad_(False)

    def given_mask(self, masks_NHW: torch.Tensor) -> torch.Tensor:
        """Masks at any size -> (N, 1, S, S) float in {0, 1}, as SAM-2 takes a conditioning mask."""
        S = self.segmenter.image_size
        return F.interpolate(masks_NHW.float()[:, None], size=(S, S), mode="bilinear", align_corners=False).gt(0.5).float()

    def start(self, state, frame_idx: int, feats: FrameFeatures, masks_NHW: torch.Tensor):
        """The given masks on the pass' first frame: SAM-2's output for them, written to memory."""
        return self.segmenter.step(state, frame_idx, feats.expand(len(masks_NHW)), mask_input=self.given_mask(masks_NHW))

    def track(self, state, frame_idx: int, feats: FrameFeatures, num_objects: int):
        """One frame without a prompt, read from and then written to memory: SAM-2's tracking step."""
        seg = self.segmenter
        prompt = seg.no_prompt(num_objects, feats.vision_feats[-1].device)
        return seg.step(state, frame_idx, feats.expand(num_objects), sparse_BNC=prompt)

    def forward(self, clip: VOSClipBatch) -> torch.Tensor:
        """Low-resolution logits (N, T', h, w) of the clip's supervised frames: frames 1.. from frame 0's
        ground truth, or every frame when frame 0 is given by clicks or a box (T' = T)."""
        return self.run_clip(clip)[0]

    def run_clip(self, clip: VOSClipBatch):
        """(logits as `forward`, the encoder's routing or None). With RDS the frames are routed in order, each by
        the previous frame's ground truth (all objects' union) and routing: see `glus.model.segmenter.rds`."""
        seg = self.segmenter
        T, N = clip.sam_frames.size(0), clip.masks.size(0)
        prior = RoutePrior(objects_union(clip.masks.transpose(0, 1))) if seg.rds is not None else None
        feats = seg.encode_image(clip.sam_frames, prior, sequential=True)  # every frame once, shared by the objects
        state = seg.reset(num_frames=T, joint_objects=True)
        logits = []
        if clip.points is None:
            self.start(state, 0, frame_of(feats, 0), clip.masks[:, 0])
        else:  # SAM-2's prompted first frame: decoded from the clicks or box, kept as a conditioning frame
            sparse = seg.point_prompt(*clip.points)
            logits.append(seg.step(state, 0, frame_of(feats, 0).expand(N), sparse_BNC=sparse,
                                   cond=True).low_res_logits[:, 0])
        logits += [self.track(state, t, frame_of(feats, t), N).low_res_logits[:, 0] for t in range(1, T)]
        return torch.stack(logits, 1), feats.routing

    def losses(self, logits_NThw: torch.Tensor, clip: VOSClipBatch, routing=None) -> dict[str, torch.Tensor]:
        """BCE and Dice per mask at the ground truth's size, as GLUS' mask losses; with RDS in training, the
        router's compute-budget loss and the kept ratio (logged, not a loss)."""
        w = self.loss_weights
        gt = clip.masks[:, clip.masks.size(1) - logits_NThw.size(1):].flatten(0, 1)
        up = F.interpolate(logits_NThw.flatten(0, 1)[:, None], size=gt.shape[-2:], mode="bilinear",
                           align_corners=False)[:, 0]
        terms = {"bce": bce_per_mask(up, gt).mean(), "dice": dice_per_mask(up, gt).mean()}
        terms["loss"] = w.bce * terms["bce"] + w.dice * terms["dice"]
        budget = self.segmenter.rds.loss(routing) if routing is not None else None
        if budget is not None:
            terms["budget"] = budget
            terms["loss"] = terms["loss"] + budget
            terms["kept"] = routing.soft.detach().float().mean()
        return terms


def objects_union(masks_TNHW: torch.Tensor) -> torch.Tensor:
    """(T, 1, H, W) float: per frame, the union of the objects' masks (probabilities or 0/1)."""
    return masks_TNHW.float().amax(1, keepdim=True)


def frame_of(feats: FrameFeatures, t: int) -> FrameFeatures:
    """Frame t of a batch of frames' features, as a batch of one."""
    return FrameFeatures([f[:, t:t + 1] for f in feats.vision_feats], [p[:, t:t + 1] for p in feats.vision_pos],
                         feats.feat_sizes)


class VOSBuilder:
    """The plain VOS model from a SAM-2 config (and checkpoint) and a memory spec (`build_memory`): the
    `vos_gated_linear` recipe (SAM-2 Hiera-L from its checkpoint, image encoder frozen) and the tiny synthetic
    one ("tiny" config, random weights, everything trains)."""

    def __init__(self, sam_config: str = "sam2_hiera_l", sam_checkpoint: str | None = None,
                 sam_image_size: int | None = None, memory: dict | None = None, train_image_encoder: bool = False,
                 segmenter: dict | None = None, loss_weights: dict | None = None, seed: int = 0,
                 init_from: str | None = None, rds: dict | None = None, encoder_lora: dict | None = None,
                 prompted: bool = False):
        """init_from: a plain VOS export whose trained tensors start this model (e.g. RDS fine-tuned from a
        trained VOS model); the RDS router (`rds`) and the encoder's I-LoRA (`encoder_lora`) are added after
        (SAM2Segmenter's settings of the same names). The export is read whenever the model is built, so a model
        made this way needs it to load. prompted: the training clips may start from clicks or a box (the data's
        `clip.prompts`); the prompt encoder then trains too (`train_prompt_encoder`)."""
        self.__dict__.update({k: v for k, v in locals().items() if k != "self"})

    def required_paths(self) -> list[tuple[str, str]]:
        how = "put it in place by hand: see checkpoints/README.md"
        paths = [(self.sam_checkpoint, how)] if self.sam_checkpoint else []
        if self.init_from:
            paths.append((self.init_from, "train the VOS model it names first (its recipe's export)"))
        return paths

    def build(self):
        """(VOSModel, None): no tokenizer, the language model is not part of this path."""
        torch.manual_seed(self.seed)
        settings = {**(self.segmenter or {}), **({"train_prompt_encoder": True} if self.prompted else {}),
                    **({"rds": self.rds} if self.rds else {}),
                    **({"encoder_lora": self.encoder_lora} if self.encoder_lora else {})}
        later = {k: settings.pop(k) for k in ("rds", "encoder_lora") if self.init_from and settings.get(k)}
        segmenter = SAM2Segmenter(self.sam_config, self.sam_image_size, self.sam_checkpoint, memory=self.memory,
                                  train_image_encoder=self.train_image_encoder, **settings)
        model = VOSModel(segmenter, LossWeights(**(self.loss_weights or {})), prompted=self.prompted)
        if self.init_from:
            from glus.model.weights.heads import copy_heads

            copy_heads(model, self.init_from)
            if later.get("rds"):
                segmenter.add_rds(later["rds"])
            if later.get("encoder_lora"):
                segmenter.add_encoder_lora(later["encoder_lora"])
        return model, None
