"""Qwen2.5-VL as GLUS' multimodal LM, through transformers' own classes (`Qwen2_5_VLForConditionalGeneration`).

The same interface as the LISA-style `MultimodalLM` (`encode_frames`, `run`, `logits_at`, ...), so the GLUS
model, the streaming engine, key frames and sparse mode use it unchanged. What is Qwen's:
- frames: each context or query frame is one image, as Qwen's processor makes one (normalised with CLIP's
  mean and std, cut into 14 px patches, the frame repeated over the 2-frame temporal patch, patches ordered by
  2x2 merge unit: `patchify`, tested against `Qwen2VLImageProcessorPil`), read by Qwen's vision encoder (window
  attention, full attention in its `fullatt_block_indexes` blocks, 2-D rotary positions) and its merger (the
  2x2 merge + MLP: the projector, trained as LISA trains its projector). A frame of S x S pixels gives
  (S / 28)^2 visual tokens, in raster order of the merged grid.
- positions: the multimodal rotary positions (M-RoPE) of Qwen2.5-VL, computed by the model's own
  `get_rope_index` from where the image slots lie. A prompt continuing a cached prefix gets its positions
  shifted by the prefix's next position, which the cache carries (`rope_next`); they equal the positions of
  the whole prompt computed at once (tested), so the engine's per-video KV cache holds.
- the image slots are Qwen's `<|image_pad|>` token (its `image_token_id`), between `<|vision_start|>` and
  `<|vision_end|>` (the "chatml" conversation of `templates.py`).
LoRA (peft) wraps the whole Qwen model, its targets matched under its language model only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glus.model.mllm.model import VisionLanguageConfig, splice_visual
from glus.transforms import clip_input


def patchify(pixels_N3HW: torch.Tensor, patch: int, merge: int, temporal: int) -> torch.Tensor:
    """Normalised frames (N, 3, H, W) -> (N * H/patch * W/patch, 3 * temporal * patch^2): Qwen's flat patch
    layout, each frame one image (repeated over the temporal patch), patches grouped by merge unit."""
    n, c, h, w = pixels_N3HW.shape
    gh, gw = h // patch, w // patch
    if gh * patch != h or gw * patch != w or gh % merge or gw % merge:
        raise ValueError(f"a {h}x{w} frame does not split into {patch}-pixel patches in {merge}x{merge} units: "
                         f"use a side divisible by {patch * merge}")
    x = pixels_N3HW.reshape(n, c, gh // merge, merge, patch, gw // merge, merge, patch)
    x = x.permute(0, 2, 5, 3, 6, 1, 4, 7)  # (N, gh/m, gw/m, m, m, C, patch, patch)
    x = x[..., None, :, :].expand(*x.shape[:6], temporal, patch, patch)
    return x.reshape(n * gh * gw, c * temporal * patch * patch)


class QwenVLMultimodalLM(nn.Module):
    def __init__(self, vlm: nn.Module, image_size: int = 448, clip_resize: str = "squash",
                 train_vision_tower: bool = False):
        """vlm: a `Qwen2_5_VLForConditionalGeneration`. image_size: the side frames are resized to (a multiple of
        patch x merge = 28 for the real model); clip_resize: "squash" (the whole frame, as Qwen reads a video
        frame: nothing cut) or "crop" (`glus.transforms.clip_input`)."""
        super().__init__()
        self.language_model = vlm
        self.config = VisionLanguageConfig(pooling="none", pool=1, projector="merger", clip_resize=clip_resize)
        self.image_token_id = vlm.config.image_token_id
        self.train_vision_tower = train_vision_tower
        self.video_projector = None
        vcfg = vlm.config.vision_config
        self.patch, self.merge, self.temporal = vcfg.patch_size, vcfg.spatial_merge_size, vcfg.temporal_patch_size
        unit = self.patch * self.merge
        if image_size % unit:
            raise ValueError(f"image_size {image_size} is not a multiple of patch x merge = {unit}")
        self._image_size = image_size
        self.vision_tower.requires_grad_(train_vision_tower)

    # ---- the parts, as MultimodalLM names them -------------------------------------------------------------

    @property
    def base_lm(self) -> nn.Module:
        """The Qwen2.5-VL model under any peft wrapper (LoRA layers injected in place)."""
        lm = self.language_model
        return lm.get_base_model() if hasattr(lm, "get_base_model") else lm

    @property
    def vision_tower(self) -> nn.Module:
        return self.base_lm.model.visual

    @property
    def projector(self) -> nn.Module:
        return self.vision_tower.merger

    @property
    def lm_config(self):
        return self.base_lm.config.text_config

    @property
    def hidden_size(self) -> int:
        return self.lm_config.hidden_size

    @property
    def image_size(self) -> int:
        return self._image_size

    def lora_targets(self, names) -> str:
        """A regular expression matching `names` (e.g. q_proj, v_proj) in the language model's layers only: the
        vision encoder's MLP shares the LM's layer names."""
        return r".*language_model\.layers\.\d+\.(self_attn|mlp)\.(" + "|".join(names) + ")"

    def language_parameters(self):
        return ((n, p) for n, p in self.language_model.named_parameters() if ".visual." not in f".{n}")

    def grid(self) -> tuple[int, int]:
        side = self._image_size // self.patch
        return side, side

    def tokens_per_frame(self) -> int:
        gh, gw = self.grid()
        return (gh // self.merge) * (gw // self.merge)

    def patches_per_frame(self) -> int:
        """The visual tokens of a frame (merged cells): the grid the [SEG] pointer reads."""
        return self.tokens_per_frame()

    # ---- frames --------------------------------------------------------------------------------------------

    def preprocess(self, frames_BHWC_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 frames -> normalised (B, 3, S, S) frames (CLIP's mean and std, as Qwen's processor)."""
        pixels = clip_input(frames_BHWC_uint8, self._image_size, self.config.clip_resize)
        return pixels.to(self.projector.mlp[0].weight.device)

    def encode_frames(self, pixels_N3HW: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> (N, K, D_lm): each frame an image through the vision encoder and the merger."""
        n = pixels_N3HW.size(0)
        gh, gw = pixels_N3HW.size(2) // self.patch, pixels_N3HW.size(3) // self.patch
        grid = torch.tensor([[1, gh, gw]]).expand(n, 3)
        flat = patchify(pixels_N3HW, self.patch, self.merge, self.temporal).to(self.vision_tower.dtype)
        train_merger = any(p.requires_grad for p in self.projector.parameters())
        on_meta = pixels_N3HW.device.type == "meta"
        extra = self._index_on_cpu(grid, pixels_N3HW.device) if on_meta else {}
        with torch.set_grad_enabled((self.train_vision_tower or train_merger) and torch.is_grad_enabled()):
            merged = self.vision_tower(flat, grid_thw=grid.to(pixels_N3HW.device), **extra).pooler_output
        return merged.view(n, -1, merged.size(-1))

    def _index_on_cpu(self, grid, device) -> dict:
        """The vision encoder's indices (rotary positions, window order, segment bounds), computed by
        transformers' own helpers from the grid on the CPU and given to it precomputed: on the meta device (the
        cost model) the grid has no values to compute them from."""
        from transformers.vision_utils import get_vision_cu_seqlens, get_vision_position_ids, get_vision_window_index

        v = self.vision_tower
        window, cu_window = get_vision_window_index(grid, v.spatial_merge_size, v.window_size, v.patch_size)
        return {"position_ids": get_vision_position_ids(grid, v.spatial_merge_size).to(device),
                "cu_seqlens": get_vision_cu_seqlens(grid), "window_index": window.to(device),
                "cu_window_seqlens": cu_window}

    def token_shares(self, masks_FOSS: torch.Tensor) -> torch.Tensor:
        """(F, O, S, S) pixel shares -> (F, K, O) the share of each visual token (merged cell) each object covers."""
        cells = F.avg_pool2d(masks_FOSS.float(), self.patch * self.merge).flatten(2)
        return cells.transpose(1, 2)

    def relate_frames(self, visual_NFKD: torch.Tensor, num_context: int) -> torch.Tensor:
        return visual_NFKD  # no video projector on this backbone

    # ---- the language model --------------------------------------------------------------------------------

    def embed(self, input_ids: torch.Tensor, visual_EIKD: torch.Tensor, check: bool = True) -> torch.Tensor:
        return splice_visual(self.base_lm.get_input_embeddings(), input_ids, self.image_token_id, visual_EIKD, check)

    def positions(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(3, E, L) Qwen2.5-VL's multimodal rotary positions of prompts starting at position 0 (the model's own
        `get_rope_index`; every image a frame of this model's grid)."""
        slots = input_ids == self.image_token_id
        images = int(slots.sum()) // self.tokens_per_frame()
        grid = torch.tensor([[1, *self.grid()]], device=input_ids.device).expand(images, 3)
        positions, _ = self.base_lm.model.get_rope_index(input_ids, mm_token_type_ids=slots.int(),
                                                         image_grid_thw=grid if images else None,
                                                         attention_mask=attention_mask)
        return positions

    def hidden_states(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, past_key_values=None,
                      use_cache: bool = False, position_ids: torch.Tensor | None = None):
        """Last-layer hidden states of Qwen's language model (and its cache); `position_ids` (3, E, L): M-RoPE
        positions (`run` computes them; without them, text positions, as the model's own default)."""
        out = self.base_lm.model.language_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                                position_ids=position_ids, past_key_values=past_key_values,
                                                use_cache=use_cache)
        return out.last_hidden_state, getattr(out, "past_key_values", None)

    def run(self, input_ids: torch.Tensor, visual_EIKD: torch.Tensor, attention_mask: torch.Tensor,
            past_key_values=None, use_cache: bool = False, check: bool = True):
        """As `MultimodalLM.run`, with M-RoPE positions. A cache made here remembers the position after its
        tokens (`rope_next`); a call continuing it starts there. A cache is meant to be extended and cropped back
        (the engine's windows): one that holds more tokens than when it was made is refused."""
        if input_ids.device.type == "meta":  # the cost model: no ids to place the images by; text positions
            return self.hidden_states(self.embed(input_ids, visual_EIKD, check), attention_mask, past_key_values,
                                      use_cache)  # cost the same
        past = 0
        start = torch.zeros(1, dtype=torch.long, device=input_ids.device)
        if past_key_values is not None:
            past = past_key_values.get_seq_length()
            if getattr(past_key_values, "rope_len", None) != past:
                raise ValueError("a Qwen2.5-VL cache continues only from the tokens it was made with (it holds "
                                 f"{past}, was made with {getattr(past_key_values, 'rope_len', None)}): crop it back")
            start = past_key_values.rope_next
        own = attention_mask[:, past:]
        positions = self.positions(input_ids, own) + start.view(1, -1, 1)
        hidden, cache = self.hidden_states(self.embed(input_ids, visual_EIKD, check), attention_mask,
                                           past_key_values, use_cache, positions)
        if use_cache and past_key_values is None:
            cache.rope_next = positions.amax(0).masked_fill(own == 0, -1).amax(1) + 1
            cache.rope_len = cache.get_seq_length()
        return hidden, cache

    def logits_at(self, hidden_ND: torch.Tensor) -> torch.Tensor:
        return self.base_lm.get_output_embeddings()(hidden_ND)
