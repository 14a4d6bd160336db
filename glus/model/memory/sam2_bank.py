"""SAM-2's memory bank behind the `Memory` interface, driving the `sam2` package's own modules.

Memory selection follows SAM-2: for frame t, the conditioning frames (temporal position 0), frame t-1, and
(num_memories - 2) earlier frames on a grid of `stride`: ((t - 2) // r) * r - k * r. What differs from
`SAM2Base._prepare_memory_conditioned_features`, and why:
- the stride is configurable in training too (SAM-2 forces 1 in training);
- a clip may have no conditioning frame at all (GLUS predicts every frame from its [SEG] prompt);
- the temporal position encoding can be switched off (the published GLUS dropped it; on by default here);
- memories that no later frame can select are pruned, so a long video holds a bounded state;
- nothing is detached: with `end_to_end=True` gradients reach the memory encoder and attention through the
  memories written earlier in the same clip (the published GLUS ran them under no_grad).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from sam2.modeling.sam2_utils import get_1d_sine_pe


@dataclass
class SAM2BankState:
    stride: int
    num_frames: int | None = None
    reverse: bool = False
    cond: dict = field(default_factory=dict)      # frame -> (features BCHW, pos_enc BCHW)
    memories: dict = field(default_factory=dict)  # non-conditioning frame -> (features, pos_enc)
    pointers: dict = field(default_factory=dict)  # frame -> object pointer (B, C)
    cond_pointers: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.cond) + len(self.memories)


class SAM2MemoryBank:
    """Stateless strategy over a SAM2Base's memory modules (it holds no parameters of its own)."""

    def __init__(self, sam, num_memories: int | None = None, stride_train: int = 1, stride_eval: int = 3,
                 temporal_encoding: bool = True, object_pointers: bool | None = None, end_to_end: bool = True,
                 prune: bool = True):
        self.sam = sam
        self.num_memories = num_memories or sam.num_maskmem  # incl. the current frame's slot, as in SAM-2
        if self.num_memories > sam.num_maskmem:
            raise ValueError(f"num_memories={self.num_memories} exceeds the model's num_maskmem={sam.num_maskmem}")
        self.stride_train, self.stride_eval = stride_train, stride_eval
        self.temporal_encoding = temporal_encoding
        self.object_pointers = sam.use_obj_ptrs_in_encoder if object_pointers is None else object_pointers
        self.end_to_end, self.prune = end_to_end, prune

    def reset(self, training: bool, num_frames: int | None = None, reverse: bool = False) -> SAM2BankState:
        return SAM2BankState(stride=self.stride_train if training else self.stride_eval,
                             num_frames=num_frames, reverse=reverse)

    # ---- selection --------------------------------------------------------------------------------------

    def _previous(self, state: SAM2BankState, t: int, t_rel: int) -> int:
        r, d = state.stride, -1 if state.reverse else 1
        if t_rel == 1:
            return t - d
        if not state.reverse:
            return ((t - 2) // r) * r - (t_rel - 2) * r
        return -(-(t + 2) // r) * r + (t_rel - 2) * r

    def selected(self, state: SAM2BankState, t: int) -> list[tuple[int, tuple]]:
        """(temporal position, memory) pairs that frame t attends to; conditioning frames have position 0."""
        chosen = [(0, m) for m in state.cond.values()]
        for t_pos in range(1, self.num_memories):
            prev = self._previous(state, t, self.num_memories - t_pos)
            if prev in state.memories:
                chosen.append((t_pos, state.memories[prev]))
        return chosen

    def _max_pointers(self, state: SAM2BankState) -> int:
        limit = self.sam.max_obj_ptrs_in_encoder
        return min(state.num_frames, limit) if state.num_frames is not None else limit

    def _pointer_tokens(self, state: SAM2BankState, t: int, batch: int, device):
        """Object pointers of conditioning frames and of up to max-1 frames just before t, with their
        temporal encodings (SAM-2's layout: split into mem_dim-sized tokens)."""
        sam, d = self.sam, -1 if state.reverse else 1
        past = {k: v for k, v in state.cond_pointers.items() if (k >= t if state.reverse else k <= t)}
        pairs = [((t - k) * d if sam.use_signed_tpos_enc_to_obj_ptrs else abs(t - k), p) for k, p in past.items()]
        max_ptrs = self._max_pointers(state)
        for t_diff in range(1, max_ptrs):
            k = t - d * t_diff
            if k < 0 or (state.num_frames is not None and k >= state.num_frames):
                break
            if k in state.pointers:
                pairs.append((t_diff, state.pointers[k]))
        if not pairs:
            return None, None
        positions, ptrs = zip(*pairs)
        ptrs = torch.stack(ptrs, dim=0)  # (P, B, C)
        C = sam.hidden_dim
        if sam.add_tpos_enc_to_obj_ptrs:
            dim = C if sam.proj_tpos_enc_in_obj_ptrs else sam.mem_dim
            pos = get_1d_sine_pe(torch.tensor(positions, device=device) / (max_ptrs - 1), dim=dim)
            pos = sam.obj_ptr_tpos_proj(pos).unsqueeze(1).expand(-1, batch, sam.mem_dim)
        else:
            pos = ptrs.new_zeros(len(positions), batch, sam.mem_dim)
        if sam.mem_dim < C:
            ptrs = ptrs.reshape(-1, batch, C // sam.mem_dim, sam.mem_dim).permute(0, 2, 1, 3).flatten(0, 1)
            pos = pos.repeat_interleave(C // sam.mem_dim, dim=0)
        return ptrs, pos

    # ---- read / write -----------------------------------------------------------------------------------

    def read(self, state: SAM2BankState, frame_idx: int, feats) -> torch.Tensor:
        sam = self.sam
        top, top_pos = feats.vision_feats[-1], feats.vision_pos[-1]  # (HW, B, C)
        (H, W), B, C = feats.feat_sizes[-1], top.size(1), sam.hidden_dim
        chosen = self.selected(state, frame_idx)
        if not chosen and not state.cond_pointers and not state.pointers:
            if sam.directly_add_no_mem_embed:
                return (top + sam.no_mem_embed).permute(1, 2, 0).view(B, C, H, W)
            memory = [sam.no_mem_embed.expand(1, B, sam.mem_dim)]
            memory_pos = [sam.no_mem_pos_enc.expand(1, B, sam.mem_dim)]
            n_ptr = 0
        else:
            memory, memory_pos = [], []
            for t_pos, (features, pos_enc) in chosen:
                memory.append(features.flatten(2).permute(2, 0, 1))
                enc = pos_enc.flatten(2).permute(2, 0, 1)
                if self.temporal_encoding:
                    enc = enc + sam.maskmem_tpos_enc[sam.num_maskmem - t_pos - 1]
                memory_pos.append(enc)
            n_ptr = 0
            if self.object_pointers:
                ptrs, pos = self._pointer_tokens(state, frame_idx, B, top.device)
                if ptrs is not None:
                    memory.append(ptrs)
                    memory_pos.append(pos)
                    n_ptr = ptrs.shape[0]
        out = sam.memory_attention(curr=[top], curr_pos=[top_pos], memory=torch.cat(memory, 0),
                                   memory_pos=torch.cat(memory_pos, 0), num_obj_ptr_tokens=n_ptr)
        return out.permute(1, 2, 0).view(B, C, H, W)

    def write(self, state: SAM2BankState, frame_idx: int, feats, mask_logits_high_res: torch.Tensor,
              object_score_logits: torch.Tensor, obj_ptr: torch.Tensor, is_cond: bool = False,
              is_mask_from_pts: bool = False) -> None:
        with torch.set_grad_enabled(self.end_to_end and torch.is_grad_enabled()):
            features, pos_enc = self.sam._encode_new_memory(
                current_vision_feats=feats.vision_feats, feat_sizes=feats.feat_sizes,
                pred_masks_high_res=mask_logits_high_res, object_score_logits=object_score_logits,
                is_mask_from_pts=is_mask_from_pts)
        if not self.end_to_end:
            features, obj_ptr = features.detach(), obj_ptr.detach()
        entry = (features, pos_enc[-1])
        (state.cond if is_cond else state.memories)[frame_idx] = entry
        (state.cond_pointers if is_cond else state.pointers)[frame_idx] = obj_ptr
        if self.prune:
            self._prune(state, frame_idx)

    def _prune(self, state: SAM2BankState, t: int) -> None:
        """Drop what no frame after t can select: bounded memory on long videos."""
        d = -1 if state.reverse else 1
        nxt = t + d
        keep = {self._previous(state, nxt + d * k, self.num_memories - p)
                for k in range(state.stride + 1) for p in range(1, self.num_memories)}
        for k in list(state.memories):
            if k not in keep and (k - nxt) * d < 0:
                del state.memories[k]
        horizon = self._max_pointers(state)
        for k in list(state.pointers):
            if (nxt - k) * d >= horizon:
                del state.pointers[k]
