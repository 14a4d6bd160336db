"""RDS, the recurrent dynamic submodel (Tang et al.): per frame, a light router picks which blocks of SAM-2's Hiera
trunk run. No public code exists; this is an implementation of the method as described (REFERENCE.md, seed 003).

- Which blocks: the blocks after the first stage that keep their input's shape. Stage transitions (the first
  block of stages 2-4: Hiera-T 1, 3, 10; B+ 2, 5, 21; L 2, 8, 44) pool and widen, so they always run; the first
  stage always runs too, since its output is what the router reads ("early features").
- The router (prediction-aware): the first stage's features average-pooled inside and outside the previous
  frame's mask, the previous frame's routing, and a flag for "there is a previous frame" -> an MLP -> one logit
  per skippable block. Once per frame, for the whole trunk (no per-block routing overhead).
- Training: a straight-through Gumbel-sigmoid gate per block and frame (the forward value is the hard 0/1
  decision, the gradient that of the soft gate); a skipped block's output equals its input exactly
  (x + g (block(x) - x)). A compute-budget loss pulls the mean soft gate to the target kept ratio.
- Inference: the router's logits ranked, the top round(ratio x blocks) kept (the budget is met on every
  frame; the router picks which); the others are not executed at all. The frame's features record which ran.
- The prior in training is the previous frame's ground truth (teacher forcing, so a clip's frames encode in one
  batch); at inference, the previous frame's prediction.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class RoutePrior:
    """What the router knows of the previous frame: its mask probabilities (B, 1, h, w) (the union of the
    objects; None on a pass' first frame) and its kept blocks (B, S) (None on the first frame)."""

    mask: torch.Tensor | None = None
    keep: torch.Tensor | None = None


@dataclass
class Routing:
    """One encode's routing: hard decisions (B, S) as used, the soft gates (B, S) (training: for the budget
    loss), and the trunk blocks that ran for at least one frame of the batch."""

    keep: torch.Tensor
    soft: torch.Tensor | None
    ran: list[int]
    skippable: list[int]

    def kept_ratio(self) -> float:
        return float(self.keep.float().mean())


def skippable_blocks(trunk) -> list[int]:
    """Trunk blocks after the first stage whose output has their input's shape (no pooling, same width)."""
    return [i for i, blk in enumerate(trunk.blocks)
            if i > trunk.stage_ends[0] and blk.pool is None and blk.dim == blk.dim_out]


class PredictionAwareRouter(nn.Module):
    def __init__(self, channels: int, num_blocks: int, hidden: int = 64, keep_bias: float = 3.0):
        """keep_bias: the last layer's initial bias; positive, so that a new router starts by keeping every
        block (the pretrained encoder's behaviour) and learns to drop some under the budget loss."""
        super().__init__()
        self.num_blocks = num_blocks
        self.mlp = nn.Sequential(nn.Linear(2 * channels + num_blocks + 1, hidden), nn.GELU(),
                                 nn.Linear(hidden, num_blocks))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.constant_(self.mlp[2].bias, keep_bias)

    def forward(self, early_BHWC: torch.Tensor, prior: RoutePrior) -> torch.Tensor:
        B, H, W, C = early_BHWC.shape
        x = early_BHWC.float()
        if prior.mask is None:
            inside, outside, seen = x.new_zeros(B, C), x.mean((1, 2)), x.new_zeros(B, 1)
        else:
            m = F.interpolate(prior.mask.float(), size=(H, W), mode="area")[:, 0, :, :, None]  # (B, H, W, 1)
            inside = (x * m).sum((1, 2)) / m.sum((1, 2)).clamp_min(1e-6)
            outside = (x * (1 - m)).sum((1, 2)) / (1 - m).sum((1, 2)).clamp_min(1e-6)
            seen = x.new_ones(B, 1)
        keep = x.new_ones(B, self.num_blocks) if prior.keep is None else prior.keep.float()
        features = torch.cat([inside, outside, keep, seen], 1).to(self.mlp[0].weight.dtype)
        return self.mlp(features).float()


def gumbel_sigmoid(logits: torch.Tensor, tau: float, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(straight-through gate with hard 0/1 values, soft gate): sigmoid((logits + logistic noise) / tau); the
    difference of two Gumbel samples is a logistic sample."""
    u = torch.rand(logits.shape, generator=generator, device=logits.device).clamp(1e-6, 1 - 1e-6)
    soft = torch.sigmoid((logits + torch.log(u) - torch.log1p(-u)) / tau)
    hard = (soft > 0.5).to(soft.dtype)
    return hard + soft - soft.detach(), soft


def top_k_keep(logits: torch.Tensor, ratio: float) -> torch.Tensor:
    """(B, S) 0/1: per frame, the round(ratio x S) blocks with the highest logits."""
    S = logits.size(1)
    k = int(round(ratio * S))
    keep = torch.zeros_like(logits)
    if k > 0:
        keep.scatter_(1, logits.topk(k, dim=1).indices, 1.0)
    return keep


def budget_loss(soft: torch.Tensor, target: float) -> torch.Tensor:
    """(mean soft gate - target kept ratio)^2 over the frames and blocks of a batch."""
    return (soft.float().mean() - target) ** 2


class RDS(nn.Module):
    """The router and the routed trunk forward for one SAM-2 image encoder (`encode` replaces its forward)."""

    def __init__(self, image_encoder, keep_ratio: float = 0.8, tau: float = 1.0, hidden: int = 64,
                 budget_weight: float = 1.0):
        super().__init__()
        trunk = image_encoder.trunk
        self.skippable = skippable_blocks(trunk)
        if not self.skippable:
            raise ValueError("this Hiera trunk has no skippable block (every block after stage 1 is a stage "
                             "transition): RDS needs a deeper trunk")
        if not 0.0 <= keep_ratio <= 1.0:
            raise ValueError(f"rds keep_ratio must be in [0, 1], got {keep_ratio}")
        self.keep_ratio, self.tau, self.budget_weight = keep_ratio, tau, budget_weight
        self.router = PredictionAwareRouter(trunk.blocks[trunk.stage_ends[0]].dim_out, len(self.skippable), hidden)

    def encode(self, image_encoder, images_B3SS: torch.Tensor, prior: RoutePrior | None = None,
               sequential: bool = False) -> tuple[dict, Routing]:
        """The image encoder's output dict (as `ImageEncoder.forward`) with routed trunk blocks, and the routing.
        sequential: the batch is the consecutive frames of one clip (training) and `prior.mask` the clip's own
        masks (T, 1, h, w): frame t is routed with frame t-1's mask and decisions (frame 0: no previous frame)."""
        trunk = image_encoder.trunk
        prior = prior or RoutePrior()
        x = trunk.patch_embed(images_B3SS)
        x = x + trunk._get_pos_embed(x.shape[1:3])
        first = trunk.stage_ends[0]
        outputs = []
        for i in range(first + 1):
            x = trunk.blocks[i](x)
            if i in trunk.stage_ends and trunk.return_interm_layers:
                outputs.append(x.permute(0, 3, 1, 2))
        keep, soft, gates = self._route(x, prior, sequential)
        ran = []
        column = {b: j for j, b in enumerate(self.skippable)}
        for i in range(first + 1, len(trunk.blocks)):
            blk = trunk.blocks[i]
            if i not in column:
                x = blk(x)
                ran.append(i)
            elif gates is not None:  # training: every block computes, the gate selects (straight-through)
                g = gates[:, column[i]].to(x.dtype)[:, None, None, None]
                x = x + g * (blk(x) - x)
                ran.append(i)
            else:
                x = self._run_kept(blk, x, keep[:, column[i]].bool(), ran, i)
            if (i == trunk.stage_ends[-1]) or (i in trunk.stage_ends and trunk.return_interm_layers):
                outputs.append(x.permute(0, 3, 1, 2))
        features, pos = image_encoder.neck(outputs)
        if image_encoder.scalp > 0:
            features, pos = features[:-image_encoder.scalp], pos[:-image_encoder.scalp]
        out = {"vision_features": features[-1], "vision_pos_enc": pos, "backbone_fpn": features}
        return out, Routing(keep, soft, ran, self.skippable)

    def _route(self, early: torch.Tensor, prior: RoutePrior, sequential: bool):
        """(hard keep (B, S), soft gates or None, straight-through gates or None)."""
        if not sequential:
            return self._decide(self.router(early, prior))
        keeps, softs, gates, prev = [], [], [], prior.keep
        for t in range(early.size(0)):  # frame t reads frame t-1's decisions: a cheap loop over the router
            mask = None if prior.mask is None or t == 0 else prior.mask[t - 1:t]
            keep, soft, gate = self._decide(self.router(early[t:t + 1], RoutePrior(mask, prev)))
            prev = keep
            keeps.append(keep)
            softs.append(soft)
            gates.append(gate)
        return torch.cat(keeps), _cat(softs), _cat(gates)

    # inference's choice of blocks: "router" (its top logits), or "random" (the same number, drawn per frame
    # from a fixed seed): the control that says whether the router's choice matters. Not saved with the model.
    choice: str = "router"

    def _decide(self, logits: torch.Tensor):
        if self.training and torch.is_grad_enabled():
            gate, soft = gumbel_sigmoid(logits, self.tau)
            return (soft > 0.5).to(soft.dtype).detach(), soft, gate
        if self.choice == "random":
            if not hasattr(self, "_random"):
                self._random = torch.Generator().manual_seed(0)
            logits = torch.rand(logits.shape, generator=self._random).to(logits.device)
        elif self.choice != "router":
            raise ValueError(f"RDS choice must be 'router' or 'random', got {self.choice!r}")
        return top_k_keep(logits, self.keep_ratio), None, None

    @staticmethod
    def _run_kept(blk, x: torch.Tensor, keep_B: torch.Tensor, ran: list, index: int) -> torch.Tensor:
        """Inference: the block runs only on the frames that keep it; not at all when none does."""
        if bool(keep_B.all()):
            ran.append(index)
            return blk(x)
        if not bool(keep_B.any()):
            return x
        ran.append(index)
        rows = keep_B.nonzero()[:, 0]
        return x.index_copy(0, rows, blk(x.index_select(0, rows)))

    def loss(self, routing: Routing) -> torch.Tensor | None:
        if routing.soft is None or self.budget_weight <= 0:
            return None
        return self.budget_weight * budget_loss(routing.soft, self.keep_ratio)


def _cat(xs: list):
    return None if xs[0] is None else torch.cat(xs)
