"""Clip-wise prediction for validation during training: each video in consecutive windows of Q query frames
(memory within a window, context frames at the segment centres), all expressions of a video batched.

It is the training forward, so validation measures exactly what is trained; the streaming engine (sliding
window, stride 1, memory across the whole video) is `glus.infer`.
"""
from __future__ import annotations

import numpy as np
import torch

from glus.data.frames import load_frames
from glus.data.samplers import inference_context_frames
from glus.eval.metrics import score_expression
from glus.model.glus import ClipBatch


@torch.no_grad()
def predict_video(model, builder, video, texts: list[str], num_context: int, num_query: int) -> np.ndarray:
    """bool (E, T, H, W) masks for the expressions `texts` of one video."""
    n = len(video.frames)
    frames = load_frames(video, range(n))
    ctx = inference_context_frames(n, num_context)
    prompts = builder.collate([builder.build(t, num_query) for t in texts], num_query)
    device = next(model.parameters()).device
    out = np.zeros((len(texts), n, video.height, video.width), dtype=bool)
    for start in range(0, n, num_query):
        ids = list(range(start, min(start + num_query, n)))
        padded = ids + [ids[-1]] * (num_query - len(ids))
        batch = ClipBatch(model.mllm.preprocess(frames[ctx + padded])[None].to(device),
                          model.segmenter.preprocess(frames[padded])[None].to(device),
                          prompts, torch.zeros(len(texts), dtype=torch.long, device=device))
        logits = model(batch).mask_logits[:, : len(ids)]
        out[:, ids] = (model.logits_at_size(logits, video.height, video.width) > 0).cpu().numpy()
    return out


def evaluate_split(model, builder, index, reader, num_context: int, num_query: int, max_videos: int | None = None,
                   text_of=lambda e: e.text, keep_predictions: int = 0):
    """Per-expression scores (J, F) on a split with ground truth; optionally the first predictions for overlays."""
    was_training = model.training
    model.eval()
    scores, kept = [], []
    groups = index.by_video()
    try:
        for vid in list(index.videos)[:max_videos]:
            exprs = [e for e in groups.get(vid, []) if e.mask.kind != "none"]
            if not exprs:
                continue
            video = index.videos[vid]
            preds = predict_video(model, builder, video, [text_of(e) for e in exprs], num_context, num_query)
            for e, pred in zip(exprs, preds):
                gt = reader.targets(e, range(len(video.frames)))
                scores.append(score_expression(vid, e.exp_id, pred, gt))
                if len(kept) < keep_predictions:
                    kept.append((video, e, pred, gt))
    finally:
        model.train(was_training)
    return scores, kept
