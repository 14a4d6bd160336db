"""A LISA-style multimodal LM: vision tower + projector + any transformers causal LM.

Projected visual tokens are spliced into `inputs_embeds` where the prompt holds <image> placeholders (one
placeholder id per visual token, so the splice is a masked scatter with no offsets to compute).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from glus.transforms import clip_input
from glus.model.mllm.tokenizer import IMAGE_TOKEN_INDEX
from glus.model.mllm.video import VideoProjector



@dataclass
class VisionLanguageConfig:
    select_layer: int = -2          # LLaVA/LISA: the second-to-last hidden state of the vision tower
    pooling: str = "strip"          # "strip": avg over 4 consecutive raster tokens (published); "2x2": spatial
    pool: int = 4                   # tokens pooled into one (strip length, or 4 = 2x2)
    projector: str = "linear"       # "linear" (LISA-7B-v1) or "mlp2x_gelu" (LLaVA-1.5)
    drop_cls: bool | None = None    # None: drop CLIP's CLS token, keep everything of CLS-free towers (SigLIP)
    clip_resize: str = "crop"       # "crop": shortest side + centre crop (published); "squash": whole frame
    video_layers: int = 0           # ours: a video projector's layers over all frames' tokens (0: none, published)
    video_slots: int = 8            # its frame slots: at least num_context + num_query
    video_init: str = "random"      # its slot and place embeddings' start: "random" or "sine" (VideoProjector)


def build_projector(kind: str, vision_dim: int, lm_dim: int) -> nn.Sequential:
    if kind == "linear":
        return nn.Sequential(nn.Linear(vision_dim, lm_dim))
    if kind == "mlp2x_gelu":
        return nn.Sequential(nn.Linear(vision_dim, lm_dim), nn.GELU(), nn.Linear(lm_dim, lm_dim))
    raise ValueError(f"unknown projector {kind!r}: 'linear' or 'mlp2x_gelu'")


def pool_tokens(patches_NPC: torch.Tensor, mode: str, pool: int) -> torch.Tensor:
    """(N, P, C) patch features -> (N, P / pool, C)."""
    n, p, c = patches_NPC.shape
    if mode == "none" or pool == 1:
        return patches_NPC
    if mode == "strip":  # the published GLUS: kernel `pool` over the flattened raster sequence
        return patches_NPC.view(n, p // pool, pool, c).mean(2)
    if mode == "2x2":
        side, k = int(round(p ** 0.5)), int(round(pool ** 0.5))
        if side * side != p or k * k != pool or side % k:
            raise ValueError(f"2x2 pooling needs a square patch grid divisible by {k}, got {p} patches")
        grid = patches_NPC.view(n, side // k, k, side // k, k, c)
        return grid.mean((2, 4)).reshape(n, -1, c)
    raise ValueError(f"unknown pooling {mode!r}: 'strip', '2x2' or 'none'")


def splice_visual(embedding: nn.Module, input_ids: torch.Tensor, slot_id: int, visual_EIKD: torch.Tensor,
                  check: bool = True) -> torch.Tensor:
    """Token embeddings of `input_ids` with the rows of `visual_EIKD`, in order, where the ids are `slot_id`."""
    slots = input_ids == slot_id
    embeds = embedding(input_ids.masked_fill(slots, 0))
    visual = visual_EIKD.reshape(-1, visual_EIKD.size(-1)).to(embeds.dtype)
    # (on the meta device, where the cost model runs it, the slots have no values to count)
    if check and slots.device.type != "meta" and int(slots.sum()) != visual.size(0):
        raise ValueError(f"the prompts hold {int(slots.sum())} image slots but {visual.size(0)} visual tokens "
                         "were given: frames per prompt or tokens per frame disagree")
    return embeds.masked_scatter(slots.unsqueeze(-1), visual)


class MultimodalLM(nn.Module):
    def __init__(self, vision_tower: nn.Module, language_model: nn.Module, config: VisionLanguageConfig,
                 image_token_id: int = IMAGE_TOKEN_INDEX, train_vision_tower: bool = False):
        super().__init__()
        self.vision_tower, self.language_model, self.config = vision_tower, language_model, config
        self.image_token_id = image_token_id
        self.train_vision_tower = train_vision_tower
        vcfg = vision_tower.config
        auto = "clip" in type(vcfg).__name__.lower()  # CLIP has a CLS token, SigLIP has none
        self.drop_cls = auto if config.drop_cls is None else config.drop_cls
        self.projector = build_projector(config.projector, vcfg.hidden_size, self.lm_config.hidden_size)
        self.video_projector = None
        if config.video_layers:  # at CLIP's patch resolution: pooling would blur how far an object moved
            self.video_projector = VideoProjector(self.lm_config.hidden_size, config.video_layers, config.video_slots,
                                                  self.patches_per_frame(), init=config.video_init)
        vision_tower.requires_grad_(train_vision_tower)

    @property
    def lm_config(self):
        return self.base_lm.config

    @property
    def base_lm(self) -> nn.Module:
        """The causal LM under any peft wrapper (LoRA layers injected in place)."""
        lm = self.language_model
        return lm.get_base_model() if hasattr(lm, "get_base_model") else lm

    @property
    def hidden_size(self) -> int:
        return self.lm_config.hidden_size

    def patches_per_frame(self) -> int:
        vcfg = self.vision_tower.config
        return (vcfg.image_size // vcfg.patch_size) ** 2

    def tokens_per_frame(self) -> int:
        """Visual tokens per frame in the LLM's prompt (after pooling)."""
        return self.patches_per_frame() // (1 if self.config.pooling == "none" else self.config.pool)

    def preprocess(self, frames_BHWC_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 frames -> CLIP input (see `glus.transforms.clip_input` for the two resize modes)."""
        pixels = clip_input(frames_BHWC_uint8, self.vision_tower.config.image_size, self.config.clip_resize)
        return pixels.to(self.projector[0].weight.device)

    def encode_frames(self, pixels_N3HW: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, K, D_lm) projected visual tokens, K = tokens_per_frame(); with a video projector,
        (N, P, D_lm) per patch, which `relate_frames` relates across frames and then pools."""
        with torch.set_grad_enabled(self.train_vision_tower and torch.is_grad_enabled()):
            out = self.vision_tower(pixel_values=pixels_N3HW.to(self.vision_tower.dtype), output_hidden_states=True)
            feats = out.hidden_states[self.config.select_layer]
            feats = feats[:, 1:] if self.drop_cls else feats
            if self.video_projector is None:
                feats = pool_tokens(feats, self.config.pooling, self.config.pool)
        return self.projector(feats.to(self.projector[0].weight.dtype))

    def token_shares(self, masks_FOSS: torch.Tensor) -> torch.Tensor:
        """(F, O, S, S) pixel shares of O objects at CLIP's input geometry -> (F, K, O) the share of each visual
        token each object covers: CLIP's patches, then this model's pooling."""
        patch = self.vision_tower.config.patch_size
        f, o = masks_FOSS.shape[:2]
        cells = torch.nn.functional.avg_pool2d(masks_FOSS.float(), patch).flatten(2)  # (F, O, P) raster order
        return pool_tokens(cells.transpose(1, 2), self.config.pooling, self.config.pool)

    def relate_frames(self, visual_NFKD: torch.Tensor, num_context: int) -> torch.Tensor:
        """The visual tokens of one prompt's frames (context frames first) as the LLM reads them: with a video
        projector, `encode_frames`' patches related across frames, then pooled; unchanged otherwise (the
        published GLUS)."""
        if self.video_projector is None:
            return visual_NFKD
        n, f, _, d = visual_NFKD.shape
        related = self.video_projector(visual_NFKD, num_context).flatten(0, 1)  # per patch
        return pool_tokens(related, self.config.pooling, self.config.pool).view(n, f, -1, d)

    @property
    def image_size(self) -> int:
        """The side of the square frames the vision tower reads (`preprocess`)."""
        return self.vision_tower.config.image_size

    def lora_targets(self, names) -> list[str]:
        """peft's target_modules for LoRA on the layers `names` (the vision tower is not in the wrapped model)."""
        return list(names)

    def language_parameters(self):
        """(name, parameter) of the language model (under any LoRA wrapper): what `set_lm_trainables` sets."""
        return self.base_lm.named_parameters()

    def embed(self, input_ids: torch.Tensor, visual_EIKD: torch.Tensor, check: bool = True) -> torch.Tensor:
        """Token embeddings with the visual tokens of each prompt's images, in prompt order, spliced in. `check`
        counts the image slots against the visual tokens (a device-to-host sync: the engine checks its prompts
        once instead)."""
        return splice_visual(self.base_lm.get_input_embeddings(), input_ids, self.image_token_id, visual_EIKD, check)

    def hidden_states(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, past_key_values=None,
                      use_cache: bool = False):
        """Last-layer (final-norm) hidden states (E, L, D) of the decoder; full-vocabulary logits are left to
        `logits_at`, so that training never materialises (E, L, vocab)."""
        out = self.base_lm.get_decoder()(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                         past_key_values=past_key_values, use_cache=use_cache)
        return out.last_hidden_state, getattr(out, "past_key_values", None)

    def run(self, input_ids: torch.Tensor, visual_EIKD: torch.Tensor, attention_mask: torch.Tensor,
            past_key_values=None, use_cache: bool = False, check: bool = True):
        """(hidden states, cache) of prompts whose image slots hold `visual_EIKD`: `embed`, then `hidden_states`.
        What every caller runs, so that a backbone whose positions depend on where the images lie (Qwen2.5-VL's
        multimodal rotary positions) sees the token ids. With `past_key_values`, `input_ids` continue the cached
        tokens and `attention_mask` covers both."""
        return self.hidden_states(self.embed(input_ids, visual_EIKD, check), attention_mask, past_key_values, use_cache)

    def logits_at(self, hidden_ND: torch.Tensor) -> torch.Tensor:
        return self.base_lm.get_output_embeddings()(hidden_ND)
