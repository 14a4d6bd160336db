"""A video projector: bidirectional transformer layers over the visual tokens of all frames of a prompt.

Ours, not the published GLUS (whose visual tokens are per frame: CLIP never sees two frames at once). It is what
video MLLMs add between a per-frame vision tower and the LLM (e.g. VideoLLaMA 2's spatio-temporal connector), so
that a token can say how the object under it moves. A frame-slot and a place embedding tell the layers when and
where a token is. The attention is block-causal so that a video's global view stays one prefix: context-frame
tokens see the context frames only (the streaming engine encodes and caches them once per video), query-frame
tokens see every frame of the prompt. Query frames take the last slots, so a short window (the first frames of a
pass) ends on the same slot as a full one.
"""
from __future__ import annotations

import torch
from torch import nn


def sine_code(dim: int, height: int, width: int, norm: float, temperature: float = 20.0) -> torch.Tensor:
    """(height * width, dim) SAM-2's 2-D sine position code of a grid in raster order, scaled to mean norm `norm`
    (the low temperature spreads a small code's frequencies over a few cells, as `sine_clip_positions`)."""
    from sam2.modeling.position_encoding import PositionEmbeddingSine

    code = PositionEmbeddingSine(dim, temperature=temperature)(torch.zeros(1, dim, height, width))[0].flatten(1).T
    return code * (norm / code.norm(dim=1).mean())


class VideoProjector(nn.Module):
    def __init__(self, dim: int, layers: int, slots: int, places: int, heads: int = 4,
                 embedding_std: float = 0.5, init: str = "random"):
        """init: how the frame-slot and place embeddings start: "random" (normal) or "sine" (a 2-D sine code of
        each place on the patch grid and a 1-D one of the slot, at the same norm, so that where a token lies and
        which way it went are linear readouts from the start; both train)."""
        super().__init__()
        if init not in ("random", "sine"):
            raise ValueError(f"video projector init {init!r}: use 'random' or 'sine'")
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.slots = slots
        self.frame = nn.Embedding(slots, dim)
        self.place = nn.Embedding(places, dim)
        with torch.no_grad():  # at the scale of the projected visual tokens, as the tiny LM's word embeddings
            self.frame.weight.normal_(0.0, embedding_std)
            self.place.weight.normal_(0.0, embedding_std)
            if init == "sine":
                side = round(places ** 0.5)
                norm = embedding_std * dim ** 0.5
                self.place.weight.copy_(sine_code(dim, side, side, norm))
                self.frame.weight.copy_(sine_code(dim, 1, slots, norm))

    def frame_slots(self, num_frames: int, num_context: int) -> list[int]:
        queries = num_frames - num_context
        if num_context < 0 or queries < 0 or num_frames > self.slots:
            raise ValueError(f"the video projector has {self.slots} frame slots; got {num_frames} frames with "
                             f"{num_context} context frames (set VisionLanguageConfig.video_slots to at least "
                             "num_context + num_query)")
        return list(range(num_context)) + list(range(self.slots - queries, self.slots))

    def attention_mask(self, num_frames: int, num_context: int, tokens: int, device) -> torch.Tensor:
        """(F*K, F*K) bool, True where attention is not allowed: a context token may not look at a query frame."""
        frame_of = torch.arange(num_frames, device=device).repeat_interleave(tokens)
        return (frame_of[:, None] < num_context) & (frame_of[None, :] >= num_context)

    def forward(self, visual_NFKD: torch.Tensor, num_context: int) -> torch.Tensor:
        n, f, k, d = visual_NFKD.shape
        slots = torch.tensor(self.frame_slots(f, num_context), device=visual_NFKD.device)
        x = visual_NFKD + self.frame(slots)[None, :, None] + self.place.weight[None, None, :k]
        mask = self.attention_mask(f, num_context, k, visual_NFKD.device)
        # is_causal given: the mask is not causal, and detecting that would read its values (not on the meta device)
        return self.encoder(x.reshape(n, f * k, d), mask=mask, is_causal=False).view(n, f, k, d)
