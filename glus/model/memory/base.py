"""The one interface every memory mechanism implements (SAM-2 bank, gated linear, modulated cross-attention).

State lives in an explicit object returned by `reset` and passed to `read` and `write`: the model keeps no
per-video state, so one model can serve many videos and expressions at once.
"""
from __future__ import annotations

from typing import Any, Protocol

import torch


class Memory(Protocol):
    def reset(self, training: bool, num_frames: int | None = None, reverse: bool = False) -> Any:
        """A fresh, empty state for one clip or video."""

    def read(self, state: Any, frame_idx: int, feats) -> torch.Tensor:
        """The current frame's top-level features (B, C, H, W), conditioned on what the state remembers."""

    def write(self, state: Any, frame_idx: int, feats, mask_logits_high_res: torch.Tensor,
              object_score_logits: torch.Tensor, obj_ptr: torch.Tensor, is_cond: bool = False) -> None:
        """Remember frame `frame_idx` and its predicted mask."""
