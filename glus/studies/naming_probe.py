"""`glus study naming-probe`: does a tiny GLUS' [SEG] state know which object an expression refers to?

For each synthetic expression of one object, the model reads the clip GLUS evaluates (the inference context
frames and 4 query frames from the middle of the video); the LM head at the first [SEG]-predicting position
must rank the referred object's colour and shape words first among the colour words and the shape words. A
motion-only expression ("the object that stops") names neither, so a model that names the object there has
related the motion word to the object that moves that way. It needs a model trained with the expression
loss (`loss_weights.expression`), whose LM head at [SEG] names words, and synthetic data with captions.
"""
from __future__ import annotations

from collections import defaultdict

import torch

from glus.data.frames import load_frames
from glus.data.samplers import inference_context_frames
from glus.model.glus import ClipBatch
from glus.vocabulary import COLOURS, SHAPES


def word_ids(tokenizer, words) -> list[int]:
    ids = [tokenizer.convert_tokens_to_ids("Ġ" + w) for w in words]  # byte-level BPE: the word after a space
    if any(i is None or i == tokenizer.unk_token_id for i in ids):
        raise ValueError(f"the tokenizer does not hold each of {list(words)} as one token")
    return ids


def probe_frames(n: int, num_context: int, num_query: int) -> list[int]:
    """The frames a probe reads of an n-frame video: the inference context frames, then `num_query` consecutive
    query frames from the middle of the video."""
    start = max(0, min(n - num_query, n // 2 - num_query // 2))
    return inference_context_frames(n, num_context) + [min(start + q, n - 1) for q in range(num_query)]


def probe_batch(model, prompts, video, exprs, num_context: int, num_query: int) -> tuple[list[int], ClipBatch]:
    """(the frames read, a ClipBatch of `exprs` on them), as GLUS reads one clip of `video`."""
    frame_ids = probe_frames(len(video.frames), num_context, num_query)
    frames = load_frames(video, frame_ids)
    return frame_ids, ClipBatch(model.mllm.preprocess(frames)[None],
                                model.segmenter.preprocess(frames[-num_query:])[None],
                                prompts.collate([prompts.build(e.text, num_query) for e in exprs], num_query),
                                torch.zeros(len(exprs), dtype=torch.long))


@torch.no_grad()
def naming_accuracy(model, tokenizer, prompts, index, num_context: int = 4, num_query: int = 4,
                    max_expressions: int | None = None) -> dict:
    """{kind: {"named": share of one-object expressions whose colour and shape both rank first, "in_video": share
    whose first colour and shape are those of some object of the video (the referred one or another), "chance":
    the mean share of the 6 x 3 names that belong to an object of the video, "count": n}}. A model that reads
    the video but not which object the expression means names an object of the video ("in_video" above
    "chance") without naming the right one."""
    captions, kinds = index.captions(), index.kinds()
    colour_ids, shape_ids = word_ids(tokenizer, list(COLOURS)), word_ids(tokenizer, list(SHAPES))
    hits, present, chance, counts = defaultdict(int), defaultdict(int), defaultdict(float), defaultdict(int)
    model.eval()
    for vid, exprs in index.by_video().items():
        exprs = [e for e in exprs if len(e.obj_ids) == 1 and (vid, e.exp_id) in captions]
        if not exprs:
            continue
        names = {tuple(captions[(vid, e.exp_id)].split()[1:3]) for e in exprs}  # the video's named objects
        batch = probe_batch(model, prompts, index.videos[vid], exprs, num_context, num_query)[1]
        seg_logits = model.language(batch).seg_logits
        if seg_logits is None:
            raise ValueError("the model has no expression loss (loss_weights.expression = 0): its LM head at [SEG] "
                             "is not trained to name words")
        first = seg_logits[:, 0]
        colour = [list(COLOURS)[i] for i in first[:, colour_ids].argmax(1).tolist()]
        shape = [SHAPES[i] for i in first[:, shape_ids].argmax(1).tolist()]
        for e, c, s in zip(exprs, colour, shape):
            words = captions[(vid, e.exp_id)].split()
            kind = kinds.get((vid, e.exp_id), "?")
            counts[kind] += 1
            hits[kind] += int(words[1] == c and words[2] == s)  # "the {colour} {shape} ..."
            present[kind] += int((c, s) in names)
            chance[kind] += len(names) / (len(COLOURS) * len(SHAPES))
        if max_expressions and sum(counts.values()) >= max_expressions:
            break
    return {k: {"named": hits[k] / counts[k], "in_video": present[k] / counts[k], "chance": chance[k] / counts[k],
                "count": counts[k]} for k in sorted(counts)}
