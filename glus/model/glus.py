"""GLUS for one batch of clips: multimodal LM -> one [SEG] per query frame -> SAM-2 decoder with memory.

Several expressions of one video share that video's CLIP and SAM-2 features: frames are encoded once per
video and gathered per expression.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from glus.model.losses import (LossWeights, bce_per_mask, ce_loss, dice_per_mask, expression_loss,
                               label_positions)
from glus.model.mllm.model import MultimodalLM
from glus.model.mllm.prompt import PromptBatch
from glus.model.pointer import SegPointer, last_frame_tokens, pointer_softmax_loss, pointer_targets
from glus.model.segmenter import FrameFeatures, SAM2Segmenter


@dataclass
class ClipBatch:
    clip_frames: torch.Tensor          # (V, F, 3, h, w) CLIP input: context frames then query frames, per video
    sam_frames: torch.Tensor           # (V, Q, 3, S, S) SAM-2 input of the query frames
    prompts: PromptBatch               # E expressions
    video_index: torch.Tensor          # (E,) the video of each expression
    masks: list | None = None          # per expression (Q, H, W) bool ground truth, at the size losses use
    meta: dict = field(default_factory=dict)  # ids for logging and the contrastive bank
    expression_ids: torch.Tensor | None = None  # (E, T) the expressions' tokens, IGNORE_INDEX-padded
    motion_targets: torch.Tensor | None = None  # (V, F, K) motion class under each visual token, -100: none


@dataclass
class LanguageOutput:
    """What the multimodal LM gives for a clip batch (`GLUS.language`)."""
    seg_hidden: torch.Tensor      # (E, Q, D) last-layer hidden states that predict [SEG]
    lm_logits: torch.Tensor       # (N, vocab) LM head at the supervised positions
    lm_targets: torch.Tensor      # (N,)
    seg_logits: torch.Tensor | None = None     # (E, Q, vocab) LM head at the [SEG]-predicting positions (expression loss)
    motion_logits: torch.Tensor | None = None  # (V, F, K, classes) the dense motion head, per visual token
    pointer_logits: torch.Tensor | None = None  # (E, Q, rows, cols) the [SEG] pointer's maps


@dataclass
class GLUSOutput:
    # (E, Q, h, w) the decoder's low-resolution logits (a quarter of the SAM-2 input size): upsampled once, to the
    # frame's size, by `logits_at_size` (as the published postprocess_masks); the memory gets them at S x S
    mask_logits: torch.Tensor
    seg_embeddings: torch.Tensor  # (E, Q, prompt_dim) [SEG] after text_hidden_fcs: the sparse prompts
    seg_hidden: torch.Tensor      # (E, Q, D) last-layer hidden states that predict [SEG]
    lm_logits: torch.Tensor       # (N, vocab) at the supervised positions
    lm_targets: torch.Tensor      # (N,)
    object_scores: torch.Tensor   # (E, Q) SAM-2 object score logits
    seg_logits: torch.Tensor | None = None  # (E, Q, vocab) LM head at the [SEG]-predicting positions
    motion_logits: torch.Tensor | None = None  # (V, F, K, classes) the dense motion target's head, per visual token
    pointer_logits: torch.Tensor | None = None  # (E, Q, rows, cols) the [SEG] pointer's maps (glus.model.pointer)


def select_batch(feats: FrameFeatures, index: torch.Tensor) -> FrameFeatures:
    return FrameFeatures([f.index_select(1, index) for f in feats.vision_feats],
                         [p.index_select(1, index) for p in feats.vision_pos], feats.feat_sizes)


class GLUS(nn.Module):
    def __init__(self, mllm: MultimodalLM, segmenter: SAM2Segmenter, loss_weights: LossWeights | None = None,
                 train_seg_projection: bool = True, seg_projection_gain: float = 1.0, template: str = "published",
                 motion_classes: int = 0, pointer_grid: tuple[int, int] | None = None):
        """template: the prompt template set (glus.model.mllm.templates) the model is trained and run with; it
        belongs to the model, since a model answers the conversation it was trained on. motion_classes: the
        classes of the dense motion target (ours, `loss_weights.motion`): a linear head reads, from each visual
        token as it enters the LLM, how the object under it moves (0: no head, the published model). pointer_grid:
        the (rows, cols) of a frame's visual tokens, for the [SEG] pointer (ours, `glus.model.pointer`); None:
        none, as published."""
        super().__init__()
        self.mllm, self.segmenter, self.template = mllm, segmenter, template
        self.loss_weights = loss_weights or LossWeights()
        d, out = mllm.hidden_size, segmenter.sam.sam_prompt_embed_dim
        # LISA's name and layout (text_hidden_fcs.0.{0,2}); GLUS re-initialises it for SAM-2's prompt size.
        self.text_hidden_fcs = nn.ModuleList([nn.Sequential(nn.Linear(d, d), nn.ReLU(inplace=True),
                                                            nn.Linear(d, out), nn.Dropout(0.0))])
        if seg_projection_gain != 1.0:  # see TinyGLUSBuilder: start the [SEG] prompts at the decoder's token scale
            with torch.no_grad():
                self.text_hidden_fcs[0][2].weight.mul_(seg_projection_gain)
                self.text_hidden_fcs[0][2].bias.mul_(seg_projection_gain)
        self.text_hidden_fcs.requires_grad_(train_seg_projection)
        self.motion_head = nn.Linear(d, motion_classes) if motion_classes else None
        if self.loss_weights.motion > 0 and self.motion_head is None:
            raise ValueError("loss_weights.motion > 0 needs motion_classes (the dense motion target's classes)")
        self.pointer = SegPointer(d, pointer_grid) if pointer_grid else None
        if self.pointer is not None:  # the decoder reads the pointer's map through SAM-2's mask-prompt convolutions
            segmenter.train_mask_prompt()
        if (self.loss_weights.pointer > 0 or self.loss_weights.pointer_softmax > 0) and self.pointer is None:
            raise ValueError("loss_weights.pointer and pointer_softmax need the [SEG] pointer (the builder's "
                             "pointer: true)")

    # ---- stages -----------------------------------------------------------------------------------------

    def seg_prompts(self, seg_hidden: torch.Tensor) -> torch.Tensor:
        """[SEG] hidden states (..., D) -> SAM-2 sparse prompt tokens (..., prompt_dim): the [SEG] projection."""
        fcs = self.text_hidden_fcs[0]
        return fcs(seg_hidden.to(fcs[0].weight.dtype))

    def pointer_maps(self, seg_hidden_NQD: torch.Tensor, hidden_NLD: torch.Tensor,
                     input_ids_NL: torch.Tensor) -> torch.Tensor | None:
        """The [SEG] pointer's maps (N, Q, rows, cols): the q-th [SEG] of a row over the tokens of the row's q-th
        query frame (its prompt's last Q frames); None without a pointer."""
        if self.pointer is None:
            return None
        Q = seg_hidden_NQD.size(1)
        tokens = last_frame_tokens(hidden_NLD, input_ids_NL, self.mllm.image_token_id, self.mllm.tokens_per_frame(), Q)
        maps = self.pointer(seg_hidden_NQD.flatten(0, 1), tokens.flatten(0, 1))
        return maps.view(*seg_hidden_NQD.shape[:2], *maps.shape[1:])

    def mask_prompts(self, pointer_logits: torch.Tensor | None) -> torch.Tensor | None:
        """Pointer maps (..., rows, cols) -> SAM-2 mask prompts (N, 1, s, s) at the prompt encoder's mask size."""
        if pointer_logits is None:
            return None
        size = self.segmenter.sam.sam_prompt_encoder.mask_input_size
        maps = pointer_logits.reshape(-1, 1, *pointer_logits.shape[-2:]).float()
        return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)

    def language(self, batch: ClipBatch) -> LanguageOutput:
        """Hidden states at [SEG], LM logits at the supervised positions and at [SEG] (None without the expression
        loss), the motion head's logits per visual token (None without that head) and the pointer's maps."""
        V, Fn = batch.clip_frames.shape[:2]
        visual = self.mllm.encode_frames(batch.clip_frames.flatten(0, 1))  # each frame once
        visual = self.mllm.relate_frames(visual.view(V, Fn, *visual.shape[1:]), Fn - batch.sam_frames.shape[1])
        motion_logits = self.motion_head(visual) if self.motion_head is not None else None
        visual = visual[batch.video_index]  # (E, F, K, D)
        p = batch.prompts
        hidden, _ = self.mllm.run(p.input_ids, visual, p.attention_mask)
        rows = torch.arange(len(hidden), device=hidden.device)[:, None]
        seg_hidden = hidden[rows, p.seg_positions - 1]  # the position that predicts [SEG] (LISA, GLUS)
        pointer = self.pointer_maps(seg_hidden, hidden, p.input_ids)
        (r, c), targets = label_positions(p.labels)
        if self.loss_weights.expression <= 0:
            return LanguageOutput(seg_hidden, self.mllm.logits_at(hidden[r, c]), targets, None, motion_logits, pointer)
        # one lm_head call serves both losses (the [SEG]-predicting rows are appended to the supervised ones)
        logits = self.mllm.logits_at(torch.cat([hidden[r, c], seg_hidden.flatten(0, 1)]))
        n = len(targets)
        return LanguageOutput(seg_hidden, logits[:n], targets, logits[n:].view(*seg_hidden.shape[:2], -1),
                              motion_logits, pointer)

    def segment(self, batch: ClipBatch, seg_embeddings: torch.Tensor, pointer_logits: torch.Tensor | None = None):
        """Query frames in order through the SAM-2 decoder, each conditioned on the memory of earlier ones; with
        the [SEG] pointer, its map of the frame is the mask prompt."""
        V, Q = batch.sam_frames.shape[:2]
        feats = self.segmenter.encode_image(batch.sam_frames.flatten(0, 1))  # (V*Q) frames, once each
        state = self.segmenter.reset(num_frames=Q)
        logits, scores = [], []
        dense = self.mask_prompts(pointer_logits)  # every query frame's at once: (E * Q, 1, s, s) or None
        dense = None if dense is None else dense.view(*pointer_logits.shape[:2], *dense.shape[1:])
        for q in range(Q):
            frame_feats = select_batch(feats, batch.video_index * Q + q)
            mask_prompt = None if dense is None else dense[:, q]
            out = self.segmenter.step(state, q, frame_feats, sparse_BNC=seg_embeddings[:, q:q + 1],
                                      mask_prompt=mask_prompt)
            logits.append(out.low_res_logits[:, 0])
            scores.append(out.object_score_logits[:, 0])
        return torch.stack(logits, 1), torch.stack(scores, 1)

    def forward(self, batch: ClipBatch) -> GLUSOutput:
        lang = self.language(batch)
        seg_embeddings = self.seg_prompts(lang.seg_hidden)
        mask_logits, scores = self.segment(batch, seg_embeddings, lang.pointer_logits)
        return GLUSOutput(mask_logits, seg_embeddings, lang.seg_hidden, lang.lm_logits, lang.lm_targets, scores,
                          lang.seg_logits, lang.motion_logits, lang.pointer_logits)

    # ---- losses -----------------------------------------------------------------------------------------

    @staticmethod
    def logits_at_size(mask_logits_EQhw: torch.Tensor, height: int, width: int) -> torch.Tensor:
        E, Q = mask_logits_EQhw.shape[:2]
        up = F.interpolate(mask_logits_EQhw.flatten(0, 1)[:, None], size=(height, width), mode="bilinear",
                           align_corners=False)
        return up.view(E, Q, height, width)

    def losses(self, out: GLUSOutput, batch: ClipBatch) -> dict[str, torch.Tensor]:
        """BCE and Dice per mask at the ground truth's size (expressions may differ in size), averaged over
        all query-frame masks of the batch; the language terms of `language_losses`."""
        w = self.loss_weights
        bce, dice, pointer, pointer_softmax = [], [], [], []
        for e, (logits, gt) in enumerate(zip(out.mask_logits, batch.masks)):
            up = self.logits_at_size(logits[None], *gt.shape[-2:])[0]
            bce.append(bce_per_mask(up, gt))
            dice.append(dice_per_mask(up, gt))
            if w.pointer > 0 or w.pointer_softmax > 0:  # each map against the ground truth's share of each cell
                maps = out.pointer_logits[e].float()
                shares = pointer_targets(gt, maps.shape[-2:])
                if w.pointer > 0:
                    pointer.append(bce_per_mask(maps, shares))
                if w.pointer_softmax > 0:
                    pointer_softmax.append(pointer_softmax_loss(maps, shares))
        language = self.language_losses(out.lm_logits, out.lm_targets, out.seg_logits, batch, out.motion_logits)
        terms = {"ce": language["ce"], "bce": torch.cat(bce).mean(), "dice": torch.cat(dice).mean()}
        terms["loss"] = w.ce * terms["ce"] + w.bce * terms["bce"] + w.dice * terms["dice"]
        for name, parts in (("pointer", pointer), ("pointer_softmax", pointer_softmax)):
            per_map = torch.cat(parts) if parts else None
            if per_map is not None and per_map.numel():  # none when every frame of the batch lacks its object
                terms[name] = per_map.mean()
                terms["loss"] = terms["loss"] + getattr(w, name) * terms[name]
        for name in ("expression", "motion"):
            if name in language:
                terms[name] = language[name]
                terms["loss"] = terms["loss"] + getattr(w, name) * terms[name]
        if "motion_accuracy" in language:  # logged, not trained
            terms["motion_accuracy"] = language["motion_accuracy"]
        return terms

    def language_losses(self, lm_logits, lm_targets, seg_logits, batch: ClipBatch,
                        motion_logits: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """CE at the supervised token positions and, with a weight, the expression loss at the [SEG]-predicting
        positions (its targets: batch.expression_ids), and their weighted sum: all that the alignment stage
        trains."""
        w = self.loss_weights
        terms = {"ce": ce_loss(lm_logits, lm_targets)}
        terms["loss"] = w.ce * terms["ce"]
        if w.expression > 0:
            if batch.expression_ids is None:
                raise ValueError("loss_weights.expression > 0 needs ClipBatch.expression_ids")
            log_probs = seg_logits.float().log_softmax(-1)
            terms["expression"] = expression_loss(log_probs, batch.expression_ids.to(log_probs.device))
            terms["loss"] = terms["loss"] + w.expression * terms["expression"]
        if w.motion > 0:
            if batch.motion_targets is None:
                raise ValueError("loss_weights.motion > 0 needs ClipBatch.motion_targets (data.init_args.clip."
                                 "object_motions: true)")
            logits = motion_logits.flatten(0, 2).float()
            targets = batch.motion_targets.flatten().to(logits.device)
            known = targets >= 0
            if bool(known.any()):
                logits, targets = logits[known], targets[known]
                terms["motion"] = F.cross_entropy(logits, targets)
                terms["motion_accuracy"] = (logits.argmax(-1) == targets).float().mean().detach()
            else:  # no object under any token of the batch: a zero that keeps the graph
                terms["motion"] = motion_logits.sum() * 0
            terms["loss"] = terms["loss"] + w.motion * terms["motion"]
        return terms

    def motion_targets(self, object_masks: list[torch.Tensor], object_motions: list[torch.Tensor],
                       min_share: float = 0.1) -> torch.Tensor:
        """(V, F, K) the motion class of the object that covers the largest share of each visual token, where
        that share is at least `min_share` (-100 elsewhere: background, or too little of an object to say). The
        synthetic objects cover a median 0.2 of the token they cover most (16 tokens per frame), hence 0.1.
        object_masks: per video (F, O, S, S) pixel shares at CLIP's geometry; object_motions: per video (O,)."""
        rows = []
        for masks, motions in zip(object_masks, object_motions):
            share = self.mllm.token_shares(masks)  # (F, K, O)
            target = torch.full(share.shape[:2], -100, dtype=torch.long)
            if share.size(-1):
                best, obj = share.max(-1)
                target = torch.where(best >= min_share, motions[obj], target)
            rows.append(target)
        return torch.stack(rows)

    def language_only(self) -> None:
        """Freeze SAM-2 and the [SEG] projection: the alignment stage trains (and its export holds) the
        multimodal LM alone."""
        self.segmenter.requires_grad_(False)
        self.text_hidden_fcs.requires_grad_(False)
