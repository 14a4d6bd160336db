"""LiVOS' gated linear matching behind the `Memory` interface: a constant-size state per object.

Per object the state is S (key_dim x value_dim), updated at every written frame t (conditioning frames too):

    S <- S * diag(g_t) + sum_p phi(k_t,p) v_t,p^T

phi is a softmax over the key channels at each pixel; the same key projection gives queries and memory keys.
g_t in (0,1)^value_dim is the frame's gate (1x1 conv of its features -> sigmoid -> spatial mean): it decays
what earlier frames wrote before frame t's own values are added, so frame i < t reaches a read at frame t+1
through g_{i+1} ... g_t. The readout r_p = phi(q_p) S / z; the normaliser comes from the ungated, pixel-aligned
running sum of past keys K (key_dim x HW):
- "scalar" (LiVOS): z = sum_p phi(q_p) . K_p, one number per batch item (summed over the pixels, as the
  numerator sums over every memory pixel: the readout keeps the values' scale at any resolution);
- "pixel" (the textbook linear-attention one): z_p = phi(q_p) . sum_p' K_p'.
The readout is fused with the frame's features, feat + fuse([feat, r]), and read as a learned no-memory value
when nothing is written yet (the first frame of a pass).

The recurrence is written as a per-frame einsum, exact and device-independent; it is the reference any optional
GPU kernel (e.g. a chunked linear-attention kernel) would be tested against. None is implemented here.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from glus.model.memory.base import Memory, MemoryState
from glus.model.memory.values import MaskValueEncoder, other_objects

NORMALISERS = ("scalar", "pixel")


@dataclass
class GatedLinearState(MemoryState):
    S: torch.Tensor | None = None         # (B, key_dim, value_dim): the gated sum of phi(k) v^T
    key_sum: torch.Tensor | None = None   # (B, key_dim, H*W): ungated, pixel-aligned sum of phi(k)
    frames: int = 0                       # frames written (the state's size does not depend on it)


def _exact(x: torch.Tensor):
    """The recurrence runs in float32 at least, outside autocast: the state accumulates over a whole video,
    where bf16/fp16 sums would drift. Returns (dtype, context). (The meta device, where the cost model runs
    shapes only, has no autocast.)"""
    dtype = torch.promote_types(x.dtype, torch.float32)
    if x.device.type == "meta":
        return dtype, contextlib.nullcontext()
    return dtype, torch.autocast(x.device.type, enabled=False)


class GatedLinearMemory(Memory):
    def __init__(self, key_dim: int = 64, value_dim: int = 256, normaliser: str = "scalar",
                 trainable: bool = True, end_to_end: bool = True, encode_conditioned: bool = False,
                 eps: float = 1e-6):
        super().__init__()
        if key_dim < 1 or value_dim < 1:
            raise ValueError(f"key_dim and value_dim must be >= 1, got {key_dim} and {value_dim}")
        if normaliser not in NORMALISERS:
            raise ValueError(f"normaliser must be one of {NORMALISERS}, got {normaliser!r}")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.key_dim, self.value_dim, self.normaliser, self.eps = key_dim, value_dim, normaliser, eps
        self.trainable, self.end_to_end, self.encode_conditioned = trainable, end_to_end, encode_conditioned
        self._dims = None  # (feat_dim, image_size, feat_size) once bound

    # ---- construction -----------------------------------------------------------------------------------

    def bind(self, sam) -> None:
        """Build the sub-modules for `sam`'s feature width and sizes. They are this module's own (saved under
        `segmenter.memory.*`); binding again to a model of the same sizes keeps the trained weights."""
        dims = (sam.hidden_dim, sam.image_size, sam.image_size // 16)
        if self._dims is not None:
            if dims != self._dims:
                raise ValueError(f"GatedLinearMemory was built for (feat_dim, image_size, feat_size) "
                                 f"{self._dims}, not {dims}")
            self.set_trainable(self.trainable)
            return
        C, image_size, feat_size = dims
        self.key_proj = nn.Conv2d(C, self.key_dim, kernel_size=1)
        self.value_encoder = MaskValueEncoder(C, self.value_dim, image_size, feat_size)
        self.gate_proj = nn.Conv2d(C, self.value_dim, kernel_size=1)
        nn.init.constant_(self.gate_proj.bias, 2.0)  # gates start near 0.9: remember for a while, then learn
        self.fuse = nn.Sequential(nn.Conv2d(C + self.value_dim, C, kernel_size=1), nn.GELU(),
                                  nn.Conv2d(C, C, kernel_size=1))
        nn.init.zeros_(self.fuse[-1].weight)  # starts as the identity on the features the decoder knows
        nn.init.zeros_(self.fuse[-1].bias)
        self.no_memory = nn.Parameter(torch.randn(self.value_dim) * 0.02)
        self._dims = dims
        self.set_trainable(self.trainable)

    def _check_bound(self) -> None:
        if self._dims is None:
            raise RuntimeError("GatedLinearMemory is not bound: the segmenter calls bind(sam) when it is built")

    def set_trainable(self, trainable: bool) -> None:
        """Only parts that receive a gradient train: without `end_to_end` writes are detached, so the value
        encoder and the gate (used only by writes) stay frozen; the key projection still trains via queries."""
        self._check_bound()
        self.requires_grad_(trainable)
        if trainable and not self.end_to_end:
            self.value_encoder.requires_grad_(False)
            self.gate_proj.requires_grad_(False)

    # ---- sub-steps (public so tests can check the recurrence against a naive form) -------------------------

    def keys(self, feat_BCHW: torch.Tensor) -> torch.Tensor:
        """phi(key) (B, key_dim, H*W): softmax over the key channels at each pixel (softmax subtracts the max)."""
        self._check_bound()
        return self.key_proj(feat_BCHW).flatten(2).softmax(dim=1)

    def values(self, feat_BCHW: torch.Tensor, mask_logits_B1SS: torch.Tensor,
               others_B1SS: torch.Tensor | None = None) -> torch.Tensor:
        """(B, value_dim, H*W) from the frame's features, the object's mask and the other objects' masks."""
        self._check_bound()
        return self.value_encoder(feat_BCHW, mask_logits_B1SS, others_B1SS).flatten(2)

    def gate(self, feat_BCHW: torch.Tensor) -> torch.Tensor:
        """g_t (B, value_dim) in (0, 1): a per-pixel sigmoid gate averaged over the frame."""
        self._check_bound()
        return self.gate_proj(feat_BCHW).sigmoid().mean(dim=(2, 3))

    def readout(self, q_BKP: torch.Tensor, S_BKV: torch.Tensor, key_sum_BKP: torch.Tensor) -> torch.Tensor:
        """phi(q) S / z (B, value_dim, H*W) with the configured normaliser (see the module docstring)."""
        dtype, exact = _exact(S_BKV)
        with exact:
            q = q_BKP.to(dtype)
            num = torch.einsum("bkp,bkv->bvp", q, S_BKV)
            if self.normaliser == "scalar":
                z = torch.einsum("bkp,bkp->b", q, key_sum_BKP)[:, None, None]
            else:
                z = torch.einsum("bkp,bk->bp", q, key_sum_BKP.sum(dim=2))[:, None, :]
            return num / z.clamp_min(self.eps)

    # ---- the Memory interface ---------------------------------------------------------------------------

    def reset(self, training: bool, num_frames: int | None = None, start: int = 0,
              reverse: bool = False, joint_objects: bool = False) -> GatedLinearState:
        # a reverse pass is a forward pass over the reversed frames: nothing in the recurrence depends on it
        return GatedLinearState(training=training, start=start, reverse=reverse, num_frames=num_frames,
                                joint_objects=joint_objects)

    def size(self, state: GatedLinearState) -> int:
        """1 once anything is written: the state is one frame's worth of tensors, whatever the video length."""
        return int(state.frames > 0)

    def read(self, state: GatedLinearState, frame_idx: int, feat_BCHW: torch.Tensor,
             pos_BCHW: torch.Tensor) -> torch.Tensor:
        state.step(frame_idx)
        B, C, H, W = feat_BCHW.shape
        if state.S is None:
            r = self.no_memory.to(feat_BCHW.dtype)[None, :, None, None].expand(B, -1, H, W)
        else:
            q = self.keys(feat_BCHW)
            r = self.readout(q, state.S, state.key_sum).to(feat_BCHW.dtype).view(B, -1, H, W)
        return feat_BCHW + self.fuse(torch.cat([feat_BCHW, r], dim=1))

    def write(self, state: GatedLinearState, frame_idx: int, feat_BCHW: torch.Tensor, mask_logits_B1SS: torch.Tensor,
              object_score_logits_B1: torch.Tensor | None = None, obj_ptr_BC: torch.Tensor | None = None,
              is_cond: bool = False) -> None:
        """Every frame, given (`is_cond`) or predicted, enters the same recurrence."""
        state.step(frame_idx)
        with torch.set_grad_enabled(self.end_to_end and torch.is_grad_enabled()):
            others = other_objects(mask_logits_B1SS.float().sigmoid()) if state.joint_objects else None
            k, v = self.keys(feat_BCHW), self.values(feat_BCHW, mask_logits_B1SS, others)
            g = None if state.S is None else self.gate(feat_BCHW)  # an empty state has nothing to decay
            dtype, exact = _exact(feat_BCHW)
            with exact:
                k, v = k.to(dtype), v.to(dtype)
                kv = torch.einsum("bkp,bvp->bkv", k, v)
                if g is None:
                    S, key_sum = kv, k
                else:
                    S, key_sum = state.S * g.to(dtype)[:, None, :] + kv, state.key_sum + k
        if not self.end_to_end:
            S, key_sum = S.detach(), key_sum.detach()
        state.S, state.key_sum, state.frames = S, key_sum, state.frames + 1
