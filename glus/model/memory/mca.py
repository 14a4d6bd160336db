"""MAVOS' modulated cross-attention (MCA) memory behind the `Memory` interface: a constant-size memory of a
reference frame, one dynamic frame and (as DeAOT/MAVOS) a short-term frame, the previous one.

A memory frame is a key map (B, key_dim, H, W), the current frame's key projection applied to the frame's
features, and a value map (B, value_dim, H, W) from `MaskValueEncoder` (features + mask + other objects).

Dynamic update, by the frame's step s in the pass (`MemoryState.step`; a reverse pass is the same recurrence
over the reversed frames):
- the first frame written becomes the reference (a later conditioning frame replaces a predicted reference:
  a given mask beats a predicted one; the first given mask then stays);
- the next frame written becomes the dynamic frame (s >= 1, none yet);
- afterwards, at every step with s % delta == 0 (delta_train in training, delta_eval at inference),
  dynamic <- MCA(new, old dynamic); other frames only refresh the short-term frame.
MCA acts on the concatenated [keys; values] map of a frame, so one attention map (computed from both, as the
paper's memory representation carries appearance and target) moves keys and values together and the updated
keys stay comparable with the current frame's query.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from glus.model.memory.base import Memory, MemoryState
from glus.model.memory.values import MaskValueEncoder, other_objects

Frame = tuple  # (keys BKHW, values BVHW)


@dataclass
class MCAState(MemoryState):
    delta: int = 1
    reference: Frame | None = None
    dynamic: Frame | None = None
    short: Frame | None = None
    reference_cond: bool = False
    # the step of the frame each slot last took in (the dynamic slot: the latest frame merged into it)
    reference_step: int | None = None
    dynamic_step: int | None = None
    short_step: int | None = None

    def frames(self) -> list:
        """The distinct frames a read attends to (the short-term frame is often the reference or dynamic one)."""
        out = []
        for f in (self.reference, self.dynamic, self.short):
            if f is not None and not any(f is g for g in out):
                out.append(f)
        return out


def _tokens(x_BDHW: torch.Tensor) -> torch.Tensor:
    return x_BDHW.flatten(2).transpose(1, 2)  # (B, HW, D)


def _attend(q_BLD: torch.Tensor, k_BSD: torch.Tensor, v_BSE: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head softmax(q k^T / sqrt(d)) v; the value width may differ from the key width."""
    def split(x):
        return x.unflatten(-1, (heads, -1)).transpose(1, 2)  # (B, heads, L, d)
    out = F.scaled_dot_product_attention(split(q_BLD), split(k_BSD), split(v_BSE))
    return out.transpose(1, 2).flatten(2)


def _mlp(dim: int, ratio: int = 4) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, ratio * dim), nn.GELU(), nn.Linear(ratio * dim, dim))


class FocalModulation(nn.Module):
    """The modulated context of a map: linear -> context Z0 + (L+1) gates; Z_l = GELU(DWConv_l(Z_{l-1}));
    a global level GELU(mean(Z_L)); sum_l gate_l * Z_l; 1x1 conv (the paper's f_fm)."""

    def __init__(self, dim: int, kernels: tuple = (3, 5)):
        super().__init__()
        self.dim, self.num_levels = dim, len(kernels)
        self.proj_in = nn.Linear(dim, dim + len(kernels) + 1)
        self.levels = nn.ModuleList(
            nn.Sequential(nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim, bias=False), nn.GELU()) for k in kernels)
        self.proj_out = nn.Conv2d(dim, dim, kernel_size=1)

    def forward(self, x_BDHW: torch.Tensor) -> torch.Tensor:
        z, gates = self.proj_in(x_BDHW.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).split(
            [self.dim, self.num_levels + 1], dim=1)
        out = 0
        for level, conv in enumerate(self.levels):
            z = conv(z)
            out = out + z * gates[:, level:level + 1]
        out = out + F.gelu(z.mean((2, 3), keepdim=True)) * gates[:, self.num_levels:]
        return self.proj_out(out)


class ModulatedCrossAttention(nn.Module):
    """MCA(new, old): new + softmax(q(new) k(old)^T / sqrt(d)) FM(old), pre-norm, then a pre-norm MLP."""

    def __init__(self, dim: int, heads: int = 1, mlp_ratio: int = 4):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)  # new and old are the same kind of map: one norm for both
        self.q, self.k = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.modulation = FocalModulation(dim)
        self.mlp = _mlp(dim, mlp_ratio)

    def forward(self, new_BDHW: torch.Tensor, old_BDHW: torch.Tensor) -> torch.Tensor:
        B, D, H, W = new_BDHW.shape
        x, old = _tokens(new_BDHW), self.norm(_tokens(old_BDHW))
        context = _tokens(self.modulation(old.transpose(1, 2).reshape(B, D, H, W)))
        x = x + _attend(self.q(self.norm(x)), self.k(old), context, self.heads)
        x = x + self.mlp(x)
        return x.transpose(1, 2).reshape(B, D, H, W)


class MCAMemory(Memory):
    def __init__(self, key_dim: int = 64, value_dim: int = 256,
                 heads: int = 1,                   # attention heads of the read and of MCA
                 delta_train: int = 2,             # steps between dynamic-frame updates in training (MAVOS: 2)
                 delta_eval: int = 10,             # ... and at inference (MAVOS: 10)
                 short_term: bool = True,          # also read the previous frame (DeAOT/MAVOS short-term memory)
                 trainable: bool = True,
                 end_to_end: bool = True,          # gradients reach the frames written earlier in the clip
                 encode_conditioned: bool = False):  # write the read's output (published GLUS) or the image's
        super().__init__()
        if min(key_dim, value_dim, heads) < 1 or key_dim % heads or value_dim % heads:
            raise ValueError(f"MCAMemory: key_dim ({key_dim}) and value_dim ({value_dim}) must be positive "
                             f"multiples of heads ({heads})")
        if delta_train < 1 or delta_eval < 1:
            raise ValueError(f"MCAMemory: delta_train ({delta_train}) and delta_eval ({delta_eval}) must be >= 1")
        self.key_dim, self.value_dim, self.heads = key_dim, value_dim, heads
        self.delta_train, self.delta_eval, self.short_term = delta_train, delta_eval, short_term
        self.trainable, self.end_to_end, self.encode_conditioned = trainable, end_to_end, encode_conditioned
        self.num_memories = 3 if short_term else 2  # frames a read attends to, at most

    def bind(self, sam) -> None:
        """Build the modules for `sam`'s feature width and sizes (they live here, under `segmenter.memory`)."""
        if hasattr(self, "key"):
            return
        C, S = sam.hidden_dim, sam.image_size
        self.key = nn.Sequential(nn.LayerNorm(C), nn.Linear(C, self.key_dim))  # the read's pre-norm + query
        self.values = MaskValueEncoder(C, self.value_dim, S, S // 16)
        self.mca = ModulatedCrossAttention(self.key_dim + self.value_dim, self.heads)
        self.no_memory = nn.Parameter(torch.zeros(self.value_dim))  # the readout of an empty memory
        self.out = nn.Linear(self.value_dim, C)
        self.mlp = _mlp(C)
        self.set_trainable(self.trainable)

    def set_trainable(self, trainable: bool) -> None:
        self.requires_grad_(trainable)
        if trainable and not self.end_to_end and hasattr(self, "key"):
            # memories are written without gradient: what only builds them cannot learn
            self.values.requires_grad_(False)
            self.mca.requires_grad_(False)

    def reset(self, training: bool, num_frames: int | None = None, start: int = 0,
              reverse: bool = False, joint_objects: bool = False) -> MCAState:
        return MCAState(training=training, start=start, reverse=reverse, num_frames=num_frames,
                        joint_objects=joint_objects, delta=self.delta_train if training else self.delta_eval)

    def size(self, state: MCAState) -> int:
        return len(state.frames())

    def _check_bound(self) -> None:
        if not hasattr(self, "key"):
            raise RuntimeError("MCAMemory is not bound: the segmenter calls bind(sam) when it is built")

    def read(self, state: MCAState, frame_idx: int, feat_BCHW: torch.Tensor, pos_BCHW: torch.Tensor) -> torch.Tensor:
        """Cross-attention of the frame to the memory frames' tokens, residual, then an MLP. Position encodings
        are not used: keys carry appearance only, as the stored keys were made without them."""
        self._check_bound()
        state.step(frame_idx)
        B, C, H, W = feat_BCHW.shape
        x = _tokens(feat_BCHW)
        frames = state.frames()
        if frames:
            keys = torch.cat([_tokens(k) for k, _ in frames], dim=1)
            values = torch.cat([_tokens(v) for _, v in frames], dim=1)
            readout = _attend(self.key(x), keys, values, self.heads)
        else:  # softmax over the one no-memory token is 1: its value is the readout
            readout = self.no_memory.to(x.dtype).expand(B, H * W, -1)
        x = x + self.out(readout)
        x = x + self.mlp(x)
        return x.transpose(1, 2).reshape(B, C, H, W)

    def write(self, state: MCAState, frame_idx: int, feat_BCHW: torch.Tensor, mask_logits_B1SS: torch.Tensor,
              object_score_logits_B1: torch.Tensor | None = None, obj_ptr_BC: torch.Tensor | None = None,
              is_cond: bool = False) -> None:
        self._check_bound()
        s = state.step(frame_idx)
        with torch.set_grad_enabled(self.end_to_end and torch.is_grad_enabled()):
            frame = self._encode(state, feat_BCHW, mask_logits_B1SS)
            if state.reference is None or (is_cond and not state.reference_cond):
                state.reference, state.reference_cond, state.reference_step = frame, is_cond, s
            elif state.dynamic is None:
                state.dynamic, state.dynamic_step = frame, s
            elif s % state.delta == 0:
                state.dynamic, state.dynamic_step = self._merge(frame, state.dynamic), s
            if self.short_term:
                state.short, state.short_step = frame, s

    def _encode(self, state: MCAState, feat_BCHW: torch.Tensor, mask_logits_B1SS: torch.Tensor) -> Frame:
        B, C, H, W = feat_BCHW.shape
        keys = self.key(_tokens(feat_BCHW)).transpose(1, 2).reshape(B, self.key_dim, H, W)
        others = other_objects(mask_logits_B1SS.float().sigmoid()) if state.joint_objects else None
        return keys, self.values(feat_BCHW, mask_logits_B1SS, others)

    def _merge(self, new: Frame, old: Frame) -> Frame:
        """MCA(new, old) on the concatenated [keys; values] maps."""
        merged = self.mca(torch.cat(new, dim=1), torch.cat(old, dim=1))
        return tuple(merged.split([self.key_dim, self.value_dim], dim=1))
