"""`glus attention-probe`: where does a tiny GLUS' [SEG] look among the visual tokens?

For each one-object synthetic expression, on the clip the naming probe reads, each LLM layer's attention from the
first [SEG]-predicting position to the visual tokens (mean over heads, renormalised over the visual tokens) is
split into the mass on the referred object's tokens, on the other objects' tokens and on the background; a token
belongs to the object covering the largest share of it, at least `min_share` (`GLUS.motion_targets`' rule), the
background otherwise. Set beside each group's share of the tokens, it says whether the LM selects the object an
expression means (mass on the referred object above its share, and above the other objects' enrichment) or only
looks at objects in general. The objects are those with a one-object caption (every synthetic object has one).
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from glus.data.clips import object_motions
from glus.data.masks import MaskReader
from glus.data.synth.language import expression_kinds
from glus.eval.naming_probe import probe_batch
from glus.transforms import clip_geometry

GROUPS = ("referred", "other", "background")


def token_owners(model, reader: MaskReader, objects: list, frame_ids: list[int], min_share: float = 0.1) -> torch.Tensor:
    """(F * K,) per visual token in prompt order, the index in `objects` of the object that covers the largest
    share of it (at least min_share), -1 for the background. objects: one-object expressions, one per object."""
    masks = torch.from_numpy(np.stack([reader.targets(e, frame_ids) for e in objects], 1)).float()  # (F, O, H, W)
    mllm = model.mllm  # the masks take the geometry the frames take on their way into CLIP
    shares = mllm.token_shares(clip_geometry(masks, mllm.vision_tower.config.image_size, mllm.config.clip_resize))
    best, owner = shares.max(-1)
    return torch.where(best >= min_share, owner, torch.full_like(owner, -1)).flatten()


def attention_split(attention_HL: torch.Tensor, slots: torch.Tensor, owners: torch.Tensor, target: int) -> torch.Tensor:
    """(3,) the attention of one query position (heads x key positions), mean over heads and renormalised over
    the visual slots, on the target's tokens, the other objects' and the background's."""
    a = attention_HL.mean(0)[slots]
    a = a / a.sum()
    referred, background = owners == target, owners < 0
    return torch.stack([a[referred].sum(), a[~referred & ~background].sum(), a[background].sum()])


@torch.no_grad()
def seg_attention(model, prompts, index, root, split: str, num_context: int = 4, num_query: int = 4) -> dict:
    """{kind: {"attention": [per layer {group: mass}], "share": {group: share of the visual tokens}, "count": n}}
    over the one-object expressions of `split`, by kind of expression."""
    kinds = expression_kinds(Path(root) / split / "meta_expressions.json")
    objects = {vid: [e for e, _ in objs] for vid, objs in object_motions(index).items()}
    reader = MaskReader(index)
    lm = model.mllm.base_lm
    previous = lm.config._attn_implementation
    lm.set_attn_implementation("eager")  # the fused kernels return no attention weights
    mass, share, counts = defaultdict(lambda: 0), defaultdict(lambda: 0), defaultdict(int)
    model.eval()
    try:
        for vid, exprs in index.by_video().items():
            objs = objects.get(vid, [])
            ids = [o.obj_ids[0] for o in objs]
            exprs = [e for e in exprs if len(e.obj_ids) == 1 and e.obj_ids[0] in ids]
            if not exprs:
                continue
            frame_ids, batch = probe_batch(model, prompts, index.videos[vid], exprs, num_context, num_query)
            owners = token_owners(model, reader, objs, frame_ids)
            visual = model.mllm.relate_frames(model.mllm.encode_frames(batch.clip_frames[0])[None], num_context)
            p = batch.prompts
            embeds = model.mllm.embed(p.input_ids, visual.expand(len(exprs), -1, -1, -1))
            out = lm.get_decoder()(inputs_embeds=embeds, attention_mask=p.attention_mask, output_attentions=True)
            for e, expr in enumerate(exprs):
                kind, target = kinds.get((vid, expr.exp_id), "?"), ids.index(expr.obj_ids[0])
                slots = p.input_ids[e] == model.mllm.image_token_id
                rows = torch.stack([attention_split(layer[e, :, p.seg_positions[e, 0] - 1], slots, owners, target)
                                    for layer in out.attentions])
                mass[kind] = mass[kind] + rows
                share[kind] = share[kind] + torch.stack([(owners == target).float().mean(),
                                                         ((owners >= 0) & (owners != target)).float().mean(),
                                                         (owners < 0).float().mean()])
                counts[kind] += 1
    finally:
        lm.set_attn_implementation(previous)
    return {k: {"attention": [dict(zip(GROUPS, (row / counts[k]).tolist())) for row in mass[k]],
                "share": dict(zip(GROUPS, (share[k] / counts[k]).tolist())), "count": counts[k]}
            for k in sorted(counts)}
