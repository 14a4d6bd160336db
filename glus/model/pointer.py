"""The [SEG] pointer (ours; off in the published recipes): each [SEG] state points at the visual tokens of its
query frame, and the map it draws, upsampled, is SAM-2's dense (mask) prompt beside the sparse [SEG] prompt.

Why: the decoder reads one frame's image features, where two look-alike objects are the same; the sparse [SEG]
prompt must then say *where* the referred one is, in a code (SAM-2's positional encoding) the LLM never sees.
The LLM does know where: its visual tokens are a grid over the frame, and the [SEG] state attends to the
referred object's tokens. The pointer reads that off as a map (a bilinear score between the [SEG] state and each
token's last hidden state) and hands it to the decoder in the form SAM-2 already takes: a low-resolution mask.
`loss_weights.pointer` may supervise the map with the ground truth's share of each token (the mask loss alone
trains it too).

The map needs the frame the tokens cover to be the frame SAM-2 sees: CLIP must see the whole frame
(`clip_resize: squash`), and the tokens must form a grid (`token_grid`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def token_grid(patches_per_frame: int, pooling: str, pool: int) -> tuple[int, int]:
    """(rows, columns) of the visual tokens of one frame, in raster order (`glus.model.mllm.model.pool_tokens`)."""
    side = int(round(patches_per_frame ** 0.5))
    if side * side != patches_per_frame:
        raise ValueError(f"the [SEG] pointer needs a square patch grid, got {patches_per_frame} patches")
    if pooling == "none" or pool == 1:
        return side, side
    if pooling == "2x2":
        k = int(round(pool ** 0.5))
        return side // k, side // k
    if pooling == "strip" and side % pool == 0:  # each token: `pool` patches side by side in one row
        return side, side // pool
    raise ValueError(f"the [SEG] pointer needs tokens on a grid: pooling {pooling!r} with pool {pool} over "
                     f"{side}x{side} patches gives none")


class SegPointer(nn.Module):
    def __init__(self, hidden_size: int, grid: tuple[int, int]):
        super().__init__()
        self.grid = tuple(grid)
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)

    def forward(self, seg_hidden_ND: torch.Tensor, tokens_NKD: torch.Tensor) -> torch.Tensor:
        """[SEG] states (N, D) and the last hidden states of their query frames' tokens (N, K, D) -> (N, rows,
        cols) map logits."""
        q = self.query(seg_hidden_ND.to(self.query.weight.dtype))
        k = self.key(tokens_NKD.to(self.key.weight.dtype))
        logits = torch.einsum("nd,nkd->nk", q, k) / math.sqrt(q.size(-1))
        return logits.view(-1, *self.grid)


def last_frame_tokens(hidden_NLD: torch.Tensor, input_ids_NL: torch.Tensor, image_token_id: int,
                      tokens_per_frame: int, frames: int) -> torch.Tensor:
    """The last hidden states at the image slots of each row's last `frames` frames, in prompt order:
    (N, frames, K, D). A stable sort puts each row's image slots last, in order, so that no step depends on
    how many slots a row holds (the cost model runs this on the meta device, where tensors have no values)."""
    n, d, k = len(hidden_NLD), hidden_NLD.size(-1), tokens_per_frame
    order = torch.sort((input_ids_NL == image_token_id).to(torch.int8), dim=1, stable=True).indices
    last = order[:, -frames * k:]
    return hidden_NLD.gather(1, last[..., None].expand(-1, -1, d)).view(n, frames, k, d)


def pointer_targets(masks_NHW: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """The share of each token's cell the mask covers: (N, rows, cols) in [0, 1]."""
    return F.adaptive_avg_pool2d(masks_NHW.float()[:, None], grid)[:, 0]


def pointer_softmax_loss(logits_NRC: torch.Tensor, targets_NRC: torch.Tensor) -> torch.Tensor:
    """(M,) cross-entropy of each map's softmax over its cells against the target shares normalised to sum to 1,
    for the M maps whose target is not empty (an object out of the frame has nowhere to point)."""
    t = targets_NRC.flatten(1).float()
    present = t.sum(1) > 0
    t = t[present] / t[present].sum(1, keepdim=True)
    return -(t * F.log_softmax(logits_NRC.flatten(1)[present].float(), dim=1)).sum(1)
