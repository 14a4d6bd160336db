"""Key-frame selector inference: a score for every frame of every expression of a video.

The reference frames are fixed per video (`inference_context_frames`), so the prompt prefix (system text, the
reference frames, the reference line) is the same for every (expression, target frame) pair: its KV cache is
computed once per video, repeated once to the batch size, and every batch of pairs appends its suffix (target
frame, question, forced answer up to the token that predicts [SCORE]) and is cropped off again. CLIP tokens of
every frame are computed once per video and shared by all expressions. One forward per batch gives the
[SCORE] state: the answer is forced, so nothing is generated.
"""
from __future__ import annotations

import numpy as np
import torch

from glus.data.frames import load_frames
from glus.data.samplers import inference_context_frames
from glus.model.mllm.prompt import pad_right
from glus.model.selector import ScorePromptBuilder


class SelectorScorer:
    def __init__(self, model, tokenizer, batch_frames: int = 16):
        """batch_frames: frames per CLIP forward, and (expression, target frame) pairs per LM forward."""
        if batch_frames < 1:
            raise ValueError(f"batch_frames must be at least 1, got {batch_frames}")
        self.model, self.batch_frames = model.eval(), batch_frames
        self.prompts = ScorePromptBuilder(tokenizer, model.mllm.tokens_per_frame(), model.num_reference,
                                          model.template)
        self.device = model.score_head[0].weight.device

    def frame_tokens(self, video) -> torch.Tensor:
        """(T, K, D) projected CLIP tokens of every frame, computed in chunks of batch_frames."""
        mllm, n = self.model.mllm, len(video.frames)
        chunks = [range(s, min(s + self.batch_frames, n)) for s in range(0, n, self.batch_frames)]
        return torch.cat([mllm.encode_frames(mllm.preprocess(load_frames(video, c))) for c in chunks])

    def prefix_cache(self, visual_TKD: torch.Tensor, references: list[int], batch: int):
        """KV cache of the shared prefix, one copy per row of a batch; and the prefix's length."""
        mllm = self.model.mllm
        ids = torch.tensor([self.prompts.prefix()], device=self.device)
        prefix = mllm.relate_frames(visual_TKD[references][None], len(references))
        _, cache = mllm.run(ids, prefix, torch.ones_like(ids), use_cache=True)
        cache.batch_repeat_interleave(batch)
        return cache, ids.shape[1]

    @torch.no_grad()
    def score_video(self, video, texts: list[str]) -> np.ndarray:
        """(E, T) float32 scores of every frame (T) for every expression in `texts`."""
        T, E = len(video.frames), len(texts)
        visual = self.frame_tokens(video)
        suffixes = [self.prompts.split_for_cache(t)[1] for t in texts]
        pairs = [(e, t) for e in range(E) for t in range(T)]
        n = min(self.batch_frames, len(pairs))  # the cache's batch size, fixed for the whole video
        references = inference_context_frames(T, self.model.num_reference)
        cache, prefix_len = self.prefix_cache(visual, references, n)
        scores = np.zeros((E, T), np.float32)
        for start in range(0, len(pairs), n):
            chunk = pairs[start:start + n]
            padded = chunk + [chunk[-1]] * (n - len(chunk))  # a full batch: the cache's batch size never changes
            values = self._score_pairs(padded, suffixes, visual, references, cache, prefix_len)[:len(chunk)]
            for (e, t), v in zip(chunk, values):
                scores[e, t] = v
        return scores

    def _score_pairs(self, pairs, suffixes, visual_TKD, references: list[int], cache, prefix_len: int) -> np.ndarray:
        mllm = self.model.mllm
        parts = [suffixes[e] for e, _ in pairs]
        ids, mask = pad_right(parts, self.prompts.tok.pad_token_id)
        ids, mask = ids.to(self.device), mask.to(self.device)
        attention = torch.cat([mask.new_ones(len(parts), prefix_len), mask], 1)
        targets = visual_TKD[[t for _, t in pairs]][:, None]  # (n, 1, K, D): one image per suffix
        if mllm.video_projector is not None:  # each target related to the references, as in training
            refs = visual_TKD[references][None].expand(len(pairs), -1, -1, -1)
            targets = mllm.relate_frames(torch.cat([refs, targets], 1), len(references))[:, -1:]
        try:
            hidden, _ = mllm.run(ids, targets, attention, past_key_values=cache, use_cache=True)
        finally:  # drop the batch's keys, even on an error: the next batch reuses the prefix alone
            cache.crop(prefix_len - cache.get_seq_length())
        last = torch.tensor([len(p) - 1 for p in parts], device=self.device)
        rows = torch.arange(len(parts), device=self.device)
        return self.model.score(hidden[rows, last]).cpu().numpy()
