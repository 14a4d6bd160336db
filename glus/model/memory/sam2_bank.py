"""SAM-2's memory bank behind the `Memory` interface, driving the `sam2` package's own modules.

Memories are addressed by the frame's step in the pass (0 at the start frame; see `MemoryState.step`), as the
published GLUS addresses them by their position in the frame list it was given, so a backward pass from a key
frame selects exactly what a forward pass over the reversed video would.

Memory selection for step t (the published GLUS, `model/GLUS.py`): t-1 and the strided steps
((t-2)//r)*r - k*r for k = 0..num_memories-2 (7 memories: t-1 + 6 strided, r = 3 at inference, 1 in training);
steps < 0 are skipped. SAM-2's own tracker reads one fewer (6: slot 0 belongs to conditioning frames):
`num_memories=6` with conditioning frames reproduces `SAM2Base.track_step` (tests/test_sam2_reference.py).

The published GLUS (the defaults): no temporal position encoding, no object pointers, no no-object embedding,
memories detached and the memory modules frozen, and a frame's memory encoded from its memory-conditioned
features (`get_visual_embs` overwrites the features it returns with the memory attention's output). Our
variant (`glus_standard_e2e`) is SAM-2's own memory, trained:
- `encode_conditioned=False`: memories encoded from the frame's image features, as SAM-2's `track_step`;
- `temporal_encoding`: SAM-2's `maskmem_tpos_enc` by distance; SAM-2 has num_maskmem (7) encodings and gives
  the last to conditioning frames, so with 7 memories the oldest shares it;
- `no_object_embedding`: SAM-2.1's `no_obj_embed_spatial`, added to memories whose object score says absent;
- `end_to_end`: gradients reach the memory encoder and attention through the memories written earlier in
  the clip (the published code ran them under no_grad although the paper calls the memory end to end).

The module holds no parameters of its own: it is bound to a `SAM2Base` whose memory modules stay where SAM-2
checkpoints (and released GLUS checkpoints, `model.visual_model.*`) put them, under `segmenter.sam`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from sam2.modeling.sam2_utils import get_1d_sine_pe

from glus.model.memory.base import Memory, MemoryState

MEMORY_PARTS = ("memory_attention", "memory_encoder", "no_mem_embed", "no_mem_pos_enc")
POINTER_PARTS = ("obj_ptr_proj", "obj_ptr_tpos_proj", "no_obj_ptr")


@dataclass
class SAM2BankState(MemoryState):
    stride: int = 1
    cond: dict = field(default_factory=dict)      # step -> (features BCHW, pos_enc BCHW)
    memories: dict = field(default_factory=dict)  # non-conditioning step -> (features, pos_enc)
    pointers: dict = field(default_factory=dict)  # step -> object pointer (B, C)
    cond_pointers: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.cond) + len(self.memories)


def memory_steps(t: int, num_memories: int, stride: int) -> list[tuple[int, int]]:
    """(t_rel, step) of the memories step t reads, oldest first: t_rel 1 is step t-1, t_rel 2.. the strided
    steps ((t-2)//r)*r - (t_rel-2)*r; negative steps are left out."""
    pairs = [(t_rel, ((t - 2) // stride) * stride - (t_rel - 2) * stride) for t_rel in range(num_memories, 1, -1)]
    return [(t_rel, s) for t_rel, s in pairs + [(1, t - 1)] if s >= 0]


def _seq(x_BCHW: torch.Tensor) -> torch.Tensor:
    return x_BCHW.flatten(2).permute(2, 0, 1)  # (HW, B, C): SAM-2's sequence layout


class SAM2MemoryBank(Memory):
    def __init__(self, num_memories: int = 7,         # past frames read: 7 in GLUS, 6 in SAM-2's tracker
                 stride_train: int = 1, stride_eval: int = 3,
                 temporal_encoding: bool = False,     # SAM-2's memory temporal encoding (published GLUS: off)
                 object_pointers: bool = False,       # SAM-2's object pointer tokens (published GLUS: off)
                 no_object_embedding: bool = False,   # SAM-2.1's embedding for absent objects (published: off)
                 end_to_end: bool = False,            # gradients through earlier memories (published: detached)
                 trainable: bool = False,             # memory attention + encoder train (published: frozen)
                 encode_conditioned: bool = True,     # memory from the read's output (published) or the image
                 prune: bool = True):
        super().__init__()
        if num_memories < 1 or stride_train < 1 or stride_eval < 1:
            raise ValueError("num_memories and the strides must be >= 1")
        self.num_memories, self.stride_train, self.stride_eval = num_memories, stride_train, stride_eval
        self.temporal_encoding, self.object_pointers = temporal_encoding, object_pointers
        self.no_object_embedding, self.end_to_end = no_object_embedding, end_to_end
        self.trainable, self.encode_conditioned, self.prune = trainable, encode_conditioned, prune
        self._sam = None

    @property
    def sam(self):
        if self._sam is None:
            raise RuntimeError("SAM2MemoryBank is not bound: the segmenter calls bind(sam) when it is built")
        return self._sam

    def bind(self, sam) -> None:
        """Use `sam`'s memory modules. Stored outside the module tree, so their weights keep SAM-2's names."""
        object.__setattr__(self, "_sam", sam)
        if self.object_pointers and not sam.use_obj_ptrs_in_encoder:
            raise ValueError("object_pointers needs a SAM-2 config with use_obj_ptrs_in_encoder")
        self.set_trainable(self.trainable)

    def set_trainable(self, trainable: bool) -> None:
        """Only parts this bank uses may train, so "trainable" always means "receives a gradient"."""
        sam = self.sam
        for name in MEMORY_PARTS + POINTER_PARTS + ("maskmem_tpos_enc", "no_obj_embed_spatial"):
            part = getattr(sam, name, None)
            if part is not None:
                part.requires_grad_(False)
        if not trainable:
            return
        used = list(MEMORY_PARTS) + (list(POINTER_PARTS) if self.object_pointers else [])
        used += ["maskmem_tpos_enc"] if self.temporal_encoding else []
        used += ["no_obj_embed_spatial"] if self.no_object_embedding and self.end_to_end else []
        if not self.end_to_end:  # memories are written without gradient: the encoder cannot learn
            used.remove("memory_encoder")
        if sam.directly_add_no_mem_embed:  # the no-memory position encoding is never read then
            used.remove("no_mem_pos_enc")
        for name in used:
            part = getattr(sam, name, None)
            if part is not None:
                part.requires_grad_(True)

    def reset(self, training: bool, num_frames: int | None = None, start: int = 0,
              reverse: bool = False, joint_objects: bool = False) -> SAM2BankState:
        return SAM2BankState(training=training, start=start, reverse=reverse, num_frames=num_frames,
                             joint_objects=joint_objects, stride=self.stride_train if training else self.stride_eval)

    def size(self, state: SAM2BankState) -> int:
        return len(state)

    # ---- read ---------------------------------------------------------------------------------------------

    def selected(self, state: SAM2BankState, t: int) -> list[tuple[int, tuple]]:
        """(t_rel, memory) pairs that step t reads; conditioning frames come first with t_rel 0."""
        chosen = [(0, m) for m in state.cond.values()]
        for t_rel, s in memory_steps(t, self.num_memories, state.stride):
            if s in state.memories:
                chosen.append((t_rel, state.memories[s]))
        return chosen

    def _tpos(self, t_rel: int) -> torch.Tensor:
        sam = self.sam
        index = sam.num_maskmem - 1 if t_rel == 0 else min(t_rel, sam.num_maskmem) - 1
        return sam.maskmem_tpos_enc[index]

    def read(self, state: SAM2BankState, frame_idx: int, feat_BCHW: torch.Tensor,
             pos_BCHW: torch.Tensor) -> torch.Tensor:
        sam, t = self.sam, state.step(frame_idx)
        B, C, H, W = feat_BCHW.shape
        top, top_pos = _seq(feat_BCHW), _seq(pos_BCHW)
        chosen = self.selected(state, t)
        pointers = (state.cond_pointers or state.pointers) and self.object_pointers
        if not chosen and not pointers:
            if sam.directly_add_no_mem_embed:
                return (top + sam.no_mem_embed).permute(1, 2, 0).view(B, C, H, W)
            memory = [sam.no_mem_embed.expand(1, B, sam.mem_dim)]
            memory_pos = [sam.no_mem_pos_enc.expand(1, B, sam.mem_dim)]
            n_ptr = 0
        else:
            memory, memory_pos, n_ptr = [], [], 0
            for t_rel, (features, pos_enc) in chosen:
                memory.append(_seq(features))
                enc = _seq(pos_enc)
                memory_pos.append(enc + self._tpos(t_rel) if self.temporal_encoding else enc)
            if self.object_pointers:
                ptrs, pos = self._pointer_tokens(state, t, B)
                if ptrs is not None:
                    memory.append(ptrs)
                    memory_pos.append(pos)
                    n_ptr = ptrs.shape[0]
        out = sam.memory_attention(curr=[top], curr_pos=[top_pos], memory=torch.cat(memory, 0),
                                   memory_pos=torch.cat(memory_pos, 0), num_obj_ptr_tokens=n_ptr)
        return out.permute(1, 2, 0).view(B, C, H, W)

    def _max_pointers(self, state: SAM2BankState) -> int:
        limit = self.sam.max_obj_ptrs_in_encoder
        return min(state.num_frames, limit) if state.num_frames is not None and not state.training else limit

    def _pointer_tokens(self, state: SAM2BankState, t: int, batch: int):
        """Object pointers of conditioning frames and of up to max-1 steps just before t, with their temporal
        encodings (SAM-2's layout: split into mem_dim-sized tokens)."""
        sam = self.sam
        pairs = [(t - k, p) for k, p in state.cond_pointers.items() if k <= t]
        max_ptrs = self._max_pointers(state)
        for t_diff in range(1, max_ptrs):
            if t - t_diff < 0:
                break
            if t - t_diff in state.pointers:
                pairs.append((t_diff, state.pointers[t - t_diff]))
        if not pairs:
            return None, None
        positions, ptrs = zip(*pairs)
        ptrs = torch.stack(ptrs, dim=0)  # (P, B, C)
        C = sam.hidden_dim
        if sam.add_tpos_enc_to_obj_ptrs:
            dim = C if sam.proj_tpos_enc_in_obj_ptrs else sam.mem_dim
            pos = get_1d_sine_pe(torch.tensor(positions, device=ptrs.device) / (max_ptrs - 1), dim=dim)
            pos = sam.obj_ptr_tpos_proj(pos.to(ptrs.dtype)).unsqueeze(1).expand(-1, batch, sam.mem_dim)
        else:
            pos = ptrs.new_zeros(len(positions), batch, sam.mem_dim)
        if sam.mem_dim < C:
            ptrs = ptrs.reshape(-1, batch, C // sam.mem_dim, sam.mem_dim).permute(0, 2, 1, 3).flatten(0, 1)
            pos = pos.repeat_interleave(C // sam.mem_dim, dim=0)
        return ptrs, pos

    # ---- write ------------------------------------------------------------------------------------------

    def write(self, state: SAM2BankState, frame_idx: int, feat_BCHW: torch.Tensor, mask_logits_B1SS: torch.Tensor,
              object_score_logits_B1: torch.Tensor | None = None, obj_ptr_BC: torch.Tensor | None = None,
              is_cond: bool = False) -> None:
        t = state.step(frame_idx)
        features, pos_enc = self._encode(feat_BCHW, mask_logits_B1SS, object_score_logits_B1)
        if not self.end_to_end:
            features = features.detach()
            obj_ptr_BC = obj_ptr_BC.detach() if obj_ptr_BC is not None else None
        (state.cond if is_cond else state.memories)[t] = (features, pos_enc)
        if self.object_pointers:
            if obj_ptr_BC is None:
                raise ValueError("object_pointers is on: write() needs the frame's object pointer")
            (state.cond_pointers if is_cond else state.pointers)[t] = obj_ptr_BC
        if self.prune:
            self._prune(state, t)

    def _encode(self, feat_BCHW, mask_logits_B1SS, object_score_logits_B1):
        """SAM-2's memory encoder on the frame's features and mask logits. Without `no_object_embedding`
        the object counts as present (SAM-2.0 configs have no such embedding at all)."""
        sam = self.sam
        scores = object_score_logits_B1
        if not self.no_object_embedding or scores is None:
            scores = mask_logits_B1SS.new_ones(mask_logits_B1SS.size(0), 1)
        dtype = feat_BCHW.dtype  # the weights' (float32 logits would meet bfloat16 convolutions under bf16)
        with torch.set_grad_enabled(self.end_to_end and torch.is_grad_enabled()):
            features, pos_enc = sam._encode_new_memory(
                current_vision_feats=[_seq(feat_BCHW)], feat_sizes=[tuple(feat_BCHW.shape[-2:])],
                pred_masks_high_res=mask_logits_B1SS.to(dtype), object_score_logits=scores.to(dtype),
                is_mask_from_pts=False)
        return features.to(dtype), pos_enc[-1].to(dtype)

    def _prune(self, state: SAM2BankState, t: int) -> None:
        """Drop what no step after t can select: bounded memory on long videos."""
        nxt = t + 1
        keep = {s for k in range(state.stride + 1) for _, s in memory_steps(nxt + k, self.num_memories, state.stride)}
        for s in list(state.memories):
            if s not in keep and s < nxt:
                del state.memories[s]
        horizon = self._max_pointers(state)
        for s in list(state.pointers):
            if nxt - s >= horizon:
                del state.pointers[s]
