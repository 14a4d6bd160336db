"""GLUS losses: CE at [SEG] (or the whole answer), BCE and Dice on masks (LISA's forms), weighted."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from glus.model.mllm.prompt import IGNORE_INDEX


@dataclass
class LossWeights:
    ce: float = 1.0
    bce: float = 2.0
    dice: float = 0.5
    contrastive: float = 0.1
    # Expression reconstruction: the LM head on each [SEG]-predicting hidden state must give the expression's
    # tokens high probability. Off in the published recipes (a pretrained LLM's hidden states already carry
    # their context); the synthetic recipe's LLM starts from random weights and needs this to read the text.
    expression: float = 0.0
    # Ours, synthetic data only: each visual token, as it enters the LLM, must name how the object under it moves
    # (GLUS.motion_targets). The tiny LLM does not learn to relate an object across frames from the mask loss
    # alone (docs/embedded_default.md, the motion probe); this dense target makes the video projector compute it.
    motion: float = 0.0
    # Ours: the [SEG] pointer's map of each query frame (glus.model.pointer) against the ground truth's share of
    # each visual token's cell (BCE); 0: the map trains through the mask loss alone.
    pointer: float = 0.0
    # Ours: the same maps as one distribution over the frame's cells (softmax) against the ground truth's share of
    # each cell, normalised (cross-entropy; frames without the object are skipped). BCE scores each cell alone, so
    # a map that lights both look-alike twins costs little there; here mass on the twin is mass off the object.
    pointer_softmax: float = 0.0


def bce_per_mask(logits_NHW: torch.Tensor, targets_NHW: torch.Tensor) -> torch.Tensor:
    """(N,) per-pixel BCE averaged over the pixels of each mask."""
    return F.binary_cross_entropy_with_logits(logits_NHW, targets_NHW.float(), reduction="none").flatten(1).mean(1)


def dice_per_mask(logits_NHW: torch.Tensor, targets_NHW: torch.Tensor, scale: float = 1000.0,
                  eps: float = 1e-6) -> torch.Tensor:
    """(N,) LISA's Dice (probabilities and targets divided by `scale` for numerical range). An empty target
    with an empty prediction costs 0."""
    p = logits_NHW.sigmoid().flatten(1) / scale
    t = targets_NHW.float().flatten(1)
    return 1 - (2 * (p * t).sum(1) + eps) / (p.sum(1) + t.sum(1) / scale + eps)


def ce_loss(lm_logits_ND: torch.Tensor, targets_N: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(lm_logits_ND.float(), targets_N)


def label_positions(labels_EL: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal LM targets: the hidden state at position i predicts labels[i + 1]. Returns (rows, cols) of the
    predicting positions and the target ids."""
    shifted = labels_EL[:, 1:]
    rows, cols = (shifted != IGNORE_INDEX).nonzero(as_tuple=True)
    return (rows, cols), shifted[rows, cols]


def expression_loss(log_probs_EQV: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Bag-of-words reconstruction: mean over expressions, query frames and the target's tokens of -log p(token),
    with p the LM head's distribution at the [SEG]-predicting position. `ids`: (E, T) one target per expression,
    or (E, Q, T) one per query frame; right-padded with IGNORE_INDEX."""
    ids_EQT = ids[:, None, :].expand(-1, log_probs_EQV.size(1), -1) if ids.dim() == 2 else ids
    valid = ids_EQT != IGNORE_INDEX
    picked = log_probs_EQV.gather(2, ids_EQT.clamp(min=0))
    per_target = -(picked * valid).sum(2) / valid.sum(2).clamp(min=1)  # (E, Q)
    return per_target.mean()
