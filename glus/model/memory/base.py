"""The one interface every memory mechanism implements (SAM-2 bank now; gated linear and modulated
cross-attention next), on plain tensors.

A memory is an `nn.Module` built by the recipe and handed to the segmenter. It keeps no per-video state:
`reset` returns a fresh state object that `read` and `write` receive, so one model serves many videos,
expressions and directions at once. Frames are addressed by their index in the video; a state started with
`reverse=True` walks the video backwards from `start` (key-frame propagation), and every memory treats it
exactly as a forward pass over the reversed video.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class MemoryState:
    """Where a pass over a video starts and which way it runs; subclasses add what they remember."""

    training: bool
    start: int = 0
    reverse: bool = False
    num_frames: int | None = None
    # True: the batch holds the objects of one video, frame for frame (the plain VOS path), so a memory may read
    # the other objects' masks; False (GLUS: a batch of expressions or clips): batch items never see each other.
    joint_objects: bool = False

    def step(self, frame_idx: int) -> int:
        """The position of `frame_idx` within the pass: 0 at the start frame, counting in the pass' direction."""
        s = (self.start - frame_idx) if self.reverse else (frame_idx - self.start)
        if s < 0:
            raise ValueError(f"frame {frame_idx} lies before the start frame {self.start} of this "
                             f"{'backward' if self.reverse else 'forward'} pass")
        return s


class Memory(nn.Module, ABC):
    # True: `write` receives the features `read` returned for the frame (the published GLUS); False: the
    # frame's own image features (SAM-2).
    encode_conditioned: bool = False

    @abstractmethod
    def reset(self, training: bool, num_frames: int | None = None, start: int = 0,
              reverse: bool = False, joint_objects: bool = False) -> MemoryState:
        """A fresh, empty state for one clip or one pass over a video."""

    @abstractmethod
    def read(self, state: MemoryState, frame_idx: int, feat_BCHW: torch.Tensor, pos_BCHW: torch.Tensor) -> torch.Tensor:
        """The current frame's top-level features (B, C, H, W), conditioned on what the state remembers."""

    @abstractmethod
    def write(self, state: MemoryState, frame_idx: int, feat_BCHW: torch.Tensor, mask_logits_B1SS: torch.Tensor,
              object_score_logits_B1: torch.Tensor | None = None, obj_ptr_BC: torch.Tensor | None = None,
              is_cond: bool = False) -> None:
        """Remember frame `frame_idx` with its predicted (or given, `is_cond`) mask logits; the state drops
        what no later frame of the pass can read, so a long video holds a bounded state."""

    @abstractmethod
    def size(self, state: MemoryState) -> int:
        """How many frames the state holds now (the contract tests check it stays bounded)."""

    def set_trainable(self, trainable: bool) -> None:
        """Freeze by rule: mark the parameters this memory uses as trainable or not."""
        self.requires_grad_(trainable)
