"""`glus study attention-probe`: where does a tiny GLUS' [SEG] look among the visual tokens?

For each one-object synthetic expression, on the clip the naming probe reads, each LLM layer's attention from the
first [SEG]-predicting position to the visual tokens (mean over heads, renormalised over the visual tokens) is
split into the mass on the referred object's tokens, on the other objects' tokens and on the background; a token
belongs to the object covering the largest share of it, at least `min_share` (`GLUS.motion_targets`' rule), the
background otherwise. Set beside each group's share of the tokens, it says whether the LM selects the object an
expression means (mass on the referred object above its share, and above the other objects' enrichment) or only
looks at objects in general. The objects are those with a one-object caption (every synthetic object has one).

With the [SEG] pointer (`glus.model.pointer`), the probe also reports its maps of the query frames: the mean
sigmoid of the map over the referred object's tokens, its look-alike twin's (an object of the same colour and
shape, where the video has one), the other objects' and the background's. A map that covers the twin as much
as the referred object has not used the words that tell them apart.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from glus.data.clips import object_motions
from glus.data.masks import MaskReader
from glus.studies.naming_probe import probe_batch
from glus.transforms import clip_geometry

GROUPS = ("referred", "other", "background")
POINTER_GROUPS = ("referred", "twin", "other", "background")


def token_owners(model, reader: MaskReader, objects: list, frame_ids: list[int], min_share: float = 0.1) -> torch.Tensor:
    """(F * K,) per visual token in prompt order, the index in `objects` of the object that covers the largest
    share of it (at least min_share), -1 for the background. objects: one-object expressions, one per object."""
    masks = torch.from_numpy(np.stack([reader.targets(e, frame_ids) for e in objects], 1)).float()  # (F, O, H, W)
    mllm = model.mllm  # the masks take the geometry the frames take on their way into CLIP
    shares = mllm.token_shares(clip_geometry(masks, mllm.image_size, mllm.config.clip_resize))
    best, owner = shares.max(-1)
    return torch.where(best >= min_share, owner, torch.full_like(owner, -1)).flatten()


def attention_split(attention_HL: torch.Tensor, slots: torch.Tensor, owners: torch.Tensor, target: int) -> torch.Tensor:
    """(3,) the attention of one query position (heads x key positions), mean over heads and renormalised over
    the visual slots, on the target's tokens, the other objects' and the background's."""
    a = attention_HL.mean(0)[slots]
    a = a / a.sum()
    referred, background = owners == target, owners < 0
    return torch.stack([a[referred].sum(), a[~referred & ~background].sum(), a[background].sum()])


def pointer_split(map_logits_QK: torch.Tensor, owners_QK: torch.Tensor, target: int, twins: set[int]) -> dict:
    """{group: the mean sigmoid of the maps over the group's tokens} for the groups that own a token."""
    p, out = map_logits_QK.float().sigmoid(), {}
    background = owners_QK < 0
    masks = {"referred": owners_QK == target,
             "twin": torch.isin(owners_QK, torch.tensor(sorted(twins), dtype=owners_QK.dtype)),
             "background": background}
    masks["other"] = ~background & ~masks["referred"] & ~masks["twin"]
    return {g: float(p[m].mean()) for g, m in masks.items() if bool(m.any())}


def twins_of(objects: list, captions: dict, vid: str, target: int) -> set[int]:
    """Indices in `objects` of the other objects whose caption names the target's colour and shape."""
    def name(o) -> tuple:
        return tuple(captions.get((vid, o.exp_id), "").split()[1:3])  # "the red circle ..."

    return {i for i, o in enumerate(objects) if i != target and name(o) == name(objects[target]) and name(o)}


@torch.no_grad()
def seg_attention(model, prompts, index, num_context: int = 4, num_query: int = 4) -> dict:
    """{kind: {"attention": [per layer {group: mass}], "share": {group: share of the visual tokens}, "count": n}}
    over the one-object expressions of the split, by kind of expression; with the [SEG] pointer, also "pointer":
    {group: mean map over the group's tokens, averaged over the expressions where the group owns a token}."""
    kinds, captions = index.kinds(), index.captions()
    objects = {vid: [e for e, _ in objs] for vid, objs in object_motions(index).items()}
    reader = MaskReader(index)
    lm = model.mllm.base_lm
    previous = lm.config._attn_implementation
    lm.set_attn_implementation("eager")  # the fused kernels return no attention weights
    mass, share, counts = defaultdict(lambda: 0), defaultdict(lambda: 0), defaultdict(int)
    pointer = defaultdict(lambda: defaultdict(list))
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
            maps = None
            if model.pointer is not None:
                each = torch.arange(len(exprs))[:, None]
                maps = model.pointer_maps(out.last_hidden_state[each, p.seg_positions - 1], out.last_hidden_state,
                                          p.input_ids).flatten(2)  # (E, Q, K)
                query_owners = owners.view(len(frame_ids), -1)[-num_query:]
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
                if maps is not None:
                    groups = pointer_split(maps[e], query_owners, target, twins_of(objs, captions, vid, target))
                    for group, value in groups.items():
                        pointer[kind][group].append(value)
    finally:
        lm.set_attn_implementation(previous)
    report = {k: {"attention": [dict(zip(GROUPS, (row / counts[k]).tolist())) for row in mass[k]],
                  "share": dict(zip(GROUPS, (share[k] / counts[k]).tolist())), "count": counts[k]}
              for k in sorted(counts)}
    for k, groups in pointer.items():
        report[k]["pointer"] = {g: float(np.mean(groups[g])) for g in POINTER_GROUPS if groups.get(g)}
    return report
