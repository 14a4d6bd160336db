"""SAM-2 as GLUS' segmenter: frozen image encoder, a sparse prompt token per frame, mask decoder, memory.

Pure network with stage methods (`encode_image`, `decode`, `step`); the per-clip memory lives in a state
object that `step` receives and updates, so the streaming engine and training share this one code path.
"""
from __future__ import annotations

import functools
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from glus.model.memory import Memory, build_memory
from glus.model.segmenter.build import build_sam2_model
from glus.transforms import sam_input

NO_OBJ_SCORE = -1024.0  # SAM-2's logit for "no object" masks


@dataclass
class FrameFeatures:
    """SAM-2 backbone features of one frame for a batch of B: per level (HW, B, C) sequences."""

    vision_feats: list
    vision_pos: list
    feat_sizes: list
    routing: object = None  # RDS: which trunk blocks ran for these frames (`glus.model.segmenter.rds.Routing`)

    def expand(self, batch: int) -> "FrameFeatures":
        """Share one frame's features among `batch` expressions (no copy)."""
        return FrameFeatures([f.expand(-1, batch, -1) for f in self.vision_feats],
                             [p.expand(-1, batch, -1) for p in self.vision_pos], self.feat_sizes, self.routing)

    def top(self) -> torch.Tensor:
        """The top-level features (B, C, H, W) that memories read and write."""
        return self._bchw(self.vision_feats[-1], self.feat_sizes[-1])

    def top_pos(self) -> torch.Tensor:
        return self._bchw(self.vision_pos[-1], self.feat_sizes[-1])

    @staticmethod
    def _bchw(x_HWBC: torch.Tensor, size) -> torch.Tensor:
        return x_HWBC.permute(1, 2, 0).reshape(x_HWBC.size(1), x_HWBC.size(2), *size)

    def high_res(self) -> list:
        return [self._bchw(x, s) for x, s in zip(self.vision_feats[:-1], self.feat_sizes[:-1])]


def in_dtype(tree, dtype: torch.dtype):
    """Floating tensors of a (nested) dict/list output of a sam2 module in `dtype`. sam2 computes some outputs in
    float32 whatever its weights' dtype (e.g. its FPN's top-down sums); with bfloat16 weights (DeepSpeed's bf16
    training casts the whole model; `glus predict` on CUDA) the next module's float32 @ bfloat16 products would
    fail. The published GLUS edited its copy of sam2 instead; the package is used unedited here."""
    if isinstance(tree, torch.Tensor):
        return tree.to(dtype) if tree.is_floating_point() and tree.dtype != dtype else tree
    if isinstance(tree, dict):
        return {k: in_dtype(v, dtype) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(in_dtype(v, dtype) for v in tree)
    return tree


def autocast_stage(method):
    """A SAM-2 stage under autocast when the segmenter's `autocast_dtype` is set (inference in bf16: float32
    weights, bf16 compute, the sam2 package's own way of running in bf16)."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        dtype = self.autocast_dtype
        if dtype is None or dtype == torch.float32:
            return method(self, *args, **kwargs)
        device = self.sam.sam_prompt_encoder.no_mask_embed.weight.device
        with torch.autocast(device.type, dtype=dtype):
            return method(self, *args, **kwargs)

    return run


@dataclass
class SegOutput:
    low_res_logits: torch.Tensor    # (B, 1, 4h, 4w) at a quarter of the SAM input size
    high_res_logits: torch.Tensor   # (B, 1, S, S) at the SAM input size
    ious: torch.Tensor              # (B, 1)
    obj_ptr: torch.Tensor | None    # (B, C) when the memory reads object pointers
    object_score_logits: torch.Tensor  # (B, 1)


class SAM2Segmenter(nn.Module):
    def __init__(self, config: str = "tiny", image_size: int | None = None, checkpoint: str | None = None,
                 overrides: dict | None = None,
                 memory: Memory | dict | None = None,  # None: the published GLUS bank (see SAM2MemoryBank)
                 train_image_encoder: bool = False,   # GLUS: frozen; features computed once per frame
                 train_mask_decoder: bool = True,
                 train_high_res_convs: bool = False,  # the decoder's conv_s0/s1 (published: never updated)
                 train_prompt_encoder: bool = False,  # click/box embeddings and the no-mask prompt (pretraining)
                 gate_by_object_score: bool = False,  # SAM-2 tracking gates masks by its object score
                 rds: dict | None = None,            # RDS routing of the trunk's blocks (glus.model.segmenter.rds)
                 encoder_lora: dict | None = None):  # I-LoRA on the trunk's most important blocks (.ilora)
        super().__init__()
        self.sam = build_sam2_model(config, image_size, checkpoint, overrides)
        self.sam.requires_grad_(False)  # then each part by rule: below, and the memory's own parts
        self.image_size = self.sam.image_size
        self.train_image_encoder = train_image_encoder
        self.gate_by_object_score = gate_by_object_score
        self.multimask = False  # GLUS decodes one mask per [SEG]
        self.memory = build_memory(memory)
        if hasattr(self.memory, "bind"):  # memories over SAM-2's own modules (the bank) use its weights
            self.memory.bind(self.sam)
        self._train_convs = train_high_res_convs and train_mask_decoder
        self._set_trainable(train_image_encoder, train_mask_decoder)
        if train_prompt_encoder:  # what clicks and boxes use (the mask prompt's convolutions stay frozen: unused)
            pe = self.sam.sam_prompt_encoder
            for module in [*list(pe.point_embeddings)[1:], pe.not_a_point_embed, pe.no_mask_embed]:
                module.requires_grad_(True)
        self.rds, self.encoder_lora = None, None
        if rds:
            self.add_rds(rds)
        if encoder_lora:
            self.add_encoder_lora(encoder_lora)

    def train_mask_prompt(self) -> None:
        """The mask-prompt convolutions train: a caller decodes with `mask_prompt` (e.g. the [SEG] pointer)."""
        self.sam.sam_prompt_encoder.mask_downscaling.requires_grad_(True)

    def add_rds(self, settings: dict) -> None:
        """RDS routing of the trunk's blocks (`glus.model.segmenter.rds.RDS` settings); a new router trains."""
        from glus.model.segmenter.rds import RDS

        self.rds = RDS(self.sam.image_encoder, **settings)

    def add_encoder_lora(self, settings: dict) -> None:
        """I-LoRA adapters on the trunk (`glus.model.segmenter.ilora.apply_encoder_lora` settings)."""
        from glus.model.segmenter.ilora import apply_encoder_lora

        apply_encoder_lora(self.sam.image_encoder.trunk, **settings)
        self.encoder_lora = settings

    # inference in bf16 (`glus.model.precision.for_inference`): float32 weights, stages under autocast. Not a
    # setting of the model: never saved, set by whoever runs it.
    autocast_dtype: torch.dtype | None = None

    @property
    def dtype(self) -> torch.dtype:
        """The weights' dtype (float32, or bfloat16 under bf16 training and inference on CUDA)."""
        return self.sam.sam_prompt_encoder.no_mask_embed.weight.dtype

    @property
    def object_pointers(self) -> bool:
        return bool(getattr(self.memory, "object_pointers", False))

    def _set_trainable(self, image_encoder: bool, mask_decoder: bool) -> None:
        """Freeze by rule: only parts that the GLUS forward uses and the losses reach can train, so that
        "trainable" always means "receives a gradient" (no unused parameters under DeepSpeed/DDP). The memory
        sets its own parts (bound at construction)."""
        sam, decoder = self.sam, self.sam.sam_mask_decoder
        sam.image_encoder.requires_grad_(image_encoder)
        decoder.requires_grad_(mask_decoder)
        unused = [decoder.iou_prediction_head]  # IoU estimates are not supervised
        if not self.gate_by_object_score:
            unused.append(decoder.pred_obj_score_head)
        if not self.multimask:  # hypernetworks of the 3 extra masks and their tokens
            unused += list(decoder.output_hypernetworks_mlps)[1:]
        if not self._train_convs:
            unused += [decoder.conv_s0, decoder.conv_s1]
        for module in unused:
            module.requires_grad_(False)

    # ---- stages -----------------------------------------------------------------------------------------

    def preprocess(self, frames_BHWC_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 RGB frames (B, H, W, 3) -> normalised (B, 3, S, S), resized as SAM-2's own transforms do."""
        return sam_input(frames_BHWC_uint8, self.image_size)

    @autocast_stage
    def encode_image(self, images_B3SS: torch.Tensor, prior=None, sequential: bool = False) -> FrameFeatures:
        """As `SAM2Base.forward_image`. The decoder's high-resolution projections (conv_s0, conv_s1) run with the
        frozen encoder, without gradient, as in the published GLUS (its `forward_image` under no_grad), unless
        `train_high_res_convs` lets them train with the mask decoder. With RDS, `prior` (a `RoutePrior`) and
        `sequential` are the router's (see `RDS.encode`); without, they are ignored."""
        sam = self.sam
        # a router or encoder LoRA trains through the frozen trunk: autograd must follow it then
        through = self.train_image_encoder or self.rds is not None or bool(self.encoder_lora)
        routing = None
        with torch.set_grad_enabled(through and torch.is_grad_enabled()):
            if self.rds is None:
                backbone_out = sam.image_encoder(images_B3SS.to(self.dtype))
            else:
                backbone_out, routing = self.rds.encode(sam.image_encoder, images_B3SS.to(self.dtype), prior,
                                                        sequential)
        if self.autocast_dtype is None:  # all weights in one dtype (bf16 training): keep every output in it
            backbone_out = in_dtype(backbone_out, self.dtype)
        if sam.use_high_res_features_in_sam:
            fpn = backbone_out["backbone_fpn"]
            with torch.set_grad_enabled(self._train_convs and torch.is_grad_enabled()):
                fpn[0] = sam.sam_mask_decoder.conv_s0(fpn[0])
                fpn[1] = sam.sam_mask_decoder.conv_s1(fpn[1])
        _, feats, pos, sizes = sam._prepare_backbone_features(backbone_out)
        return FrameFeatures(feats, pos, sizes, routing)

    @autocast_stage
    def no_prompt(self, batch: int, device) -> torch.Tensor:
        """SAM-2's sparse embedding when a frame has no prompt (one padding point): (B, 1, C)."""
        coords = torch.zeros(batch, 1, 2, device=device)
        labels = -torch.ones(batch, 1, dtype=torch.int32, device=device)
        sparse, _ = self.sam.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        return sparse

    @autocast_stage
    def point_prompt(self, coords_BP2: torch.Tensor, labels_BP: torch.Tensor) -> torch.Tensor:
        """SAM-2's sparse embedding of points in input pixels (S x S), labels as SAM-2's: 1 a click on the
        object, 2 and 3 a box's top-left and bottom-right corners: (B, P + 1, C) with the padding point."""
        sparse, _ = self.sam.sam_prompt_encoder(points=(coords_BP2, labels_BP), boxes=None, masks=None)
        return sparse

    def dense_pe(self) -> torch.Tensor:
        """The prompt encoder's dense positional encoding, in the weights' dtype. sam2 builds its grid in float32
        whatever the weights' dtype (see `in_dtype`), so with bfloat16 weights the package's own code runs on a
        float32 copy of the (fixed, random) matrix, and the result is cast."""
        layer = self.sam.sam_prompt_encoder.pe_layer
        matrix = layer.positional_encoding_gaussian_matrix
        if matrix.dtype == torch.float32:
            return self.sam.sam_prompt_encoder.get_dense_pe()
        layer.positional_encoding_gaussian_matrix = matrix.float()
        try:
            return self.sam.sam_prompt_encoder.get_dense_pe().to(matrix.dtype)
        finally:
            layer.positional_encoding_gaussian_matrix = matrix

    @autocast_stage
    def decode(self, pix_feat: torch.Tensor, feats: FrameFeatures, sparse_BNC: torch.Tensor,
               multimask: bool = False, mask_prompt: torch.Tensor | None = None) -> SegOutput:
        """The mask decoder with a sparse prompt (e.g. the projected [SEG] token) and a dense one: the no-mask
        prompt, or `mask_prompt` (B, 1, s, s) logits at the prompt encoder's mask_input_size (e.g. the [SEG]
        pointer's map) through SAM-2's mask-prompt convolutions."""
        sam = self.sam
        B = pix_feat.size(0)
        pe = sam.sam_prompt_encoder
        if mask_prompt is None:
            dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(B, -1, *pe.image_embedding_size)
        else:
            dense = pe.mask_downscaling(mask_prompt.to(self.dtype))
        low, ious, tokens, obj_scores = sam.sam_mask_decoder(
            image_embeddings=pix_feat, image_pe=self.dense_pe(), sparse_prompt_embeddings=sparse_BNC,
            dense_prompt_embeddings=dense, multimask_output=multimask, repeat_image=False,
            high_res_features=feats.high_res())
        if sam.pred_obj_scores and self.gate_by_object_score:
            low = torch.where(obj_scores[:, None, None] > 0, low, NO_OBJ_SCORE)
        low = low.float()
        token = tokens[:, 0]
        if multimask:
            best = ious.argmax(-1)
            rows = torch.arange(B, device=low.device)
            low, ious = low[rows, best].unsqueeze(1), ious[rows, best].unsqueeze(1)
            if tokens.size(1) > 1:
                token = tokens[rows, best]
        high = F.interpolate(low, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        ptr = self._object_pointer(token, obj_scores) if self.object_pointers else None
        return SegOutput(low, high, ious, ptr, obj_scores)

    def _object_pointer(self, token: torch.Tensor, obj_scores: torch.Tensor) -> torch.Tensor:
        sam = self.sam
        ptr = sam.obj_ptr_proj(token)
        if sam.pred_obj_scores:
            appearing = obj_scores.sigmoid() if sam.soft_no_obj_ptr else (obj_scores > 0).float()
            if sam.fixed_no_obj_ptr:
                ptr = appearing * ptr
            ptr = ptr + (1 - appearing) * sam.no_obj_ptr
        return ptr

    @autocast_stage
    def mask_as_output(self, feats: FrameFeatures, mask_B1SS: torch.Tensor) -> SegOutput:
        """A given mask (e.g. a ground-truth first frame) used as the frame's output, as SAM-2 does."""
        low, high, ious, _, _, ptr, score = self.sam._use_mask_as_output(feats.top(), feats.high_res(), mask_B1SS)
        return SegOutput(low, high, ious, ptr, score)

    @autocast_stage
    def step(self, state, frame_idx: int, feats: FrameFeatures, sparse_BNC: torch.Tensor | None = None,
             mask_input: torch.Tensor | None = None, multimask: bool = False, cond: bool | None = None,
             mask_prompt: torch.Tensor | None = None) -> SegOutput:
        """Segment one frame with memory, then write it to memory. Exactly one of sparse prompt / mask. `cond`:
        whether the frame is written as a conditioning frame (default: when a mask is given; a user's clicks or
        box make one too, as in SAM-2). `mask_prompt`: a dense prompt beside the sparse one (see `decode`), not
        a mask taken as the output as `mask_input` is."""
        top, pos = feats.top(), feats.top_pos()
        if mask_input is not None:
            out, written = self.mask_as_output(feats, mask_input), top
        else:
            conditioned = self.memory.read(state, frame_idx, top, pos)
            out = self.decode(conditioned, feats, sparse_BNC, multimask, mask_prompt)
            # the published GLUS encodes the memory from the memory-conditioned features; SAM-2 from the image's
            written = conditioned if self.memory.encode_conditioned else top
        self.memory.write(state, frame_idx, written, out.high_res_logits, out.object_score_logits, out.obj_ptr,
                          is_cond=mask_input is not None if cond is None else cond)
        return out

    def reset(self, num_frames: int | None = None, start: int = 0, reverse: bool = False,
              joint_objects: bool = False):
        """A fresh memory state for one clip, or one pass over a video from `start` (backwards if `reverse`);
        `joint_objects`: the batch is the objects of one video (see `MemoryState`)."""
        return self.memory.reset(self.training, num_frames, start, reverse, joint_objects)


