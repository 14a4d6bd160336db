"""The full-size GLUS: LISA-7B-v1 (CLIP ViT-L/14 + Vicuna-7B) + SAM-2 Hiera-L, from LISA's folder
(`LisaGLUSBuilder`, what the real recipes name), with random weights for speed and memory checks
(`RandomWeightsGLUSBuilder`), or on the meta device for parameter counts (`glus_7b_on_meta`)."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

from glus.model.glus import GLUS
from glus.model.losses import LossWeights
from glus.model.mllm import MultimodalLM, VisionLanguageConfig, add_glus_tokens, build_tiny_tokenizer
from glus.model.mllm.lora import apply_lora, set_lm_trainables
from glus.model.mllm.tokenizer import SPECIAL_TOKENS
from glus.model.segmenter import SAM2Segmenter
from glus.model.weights.lisa import load_lisa


def lisa_7b_configs(vocab_size: int = 32003) -> tuple[CLIPVisionConfig, LlamaConfig]:
    """LISA-7B-v1's shapes: CLIP ViT-L/14 at 224 px and LLaMA-7B (Vicuna) with LISA's 32003 tokens."""
    clip = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                            image_size=224, patch_size=14, projection_dim=768)
    llama = LlamaConfig(vocab_size=vocab_size, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                        num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=2048,
                        tie_word_embeddings=False)
    return clip, llama


def glus_7b_on_meta(sam_config: str = "sam2_hiera_l", lora: bool = True, memory: dict | None = None, **kw) -> GLUS:
    """The full-size GLUS (LISA-7B-v1 shapes + SAM-2 Hiera-L at 1024 px) on the meta device: no weights;
    for parameter counts, trainable-set checks and the cost model (`glus.tools.cost`). The keyword arguments
    are `glus_7b`'s."""
    return glus_7b("meta", sam_config, lora, memory, **kw)


def glus_7b(device, sam_config: str = "sam2_hiera_l", lora: bool = True, memory: dict | None = None, *,
            sam_image_size: int = 1024, segmenter: dict | None = None, vl: VisionLanguageConfig | None = None,
            lora_r: int = 8, lora_alpha: int = 16, lora_dropout: float = 0.05, embeddings: str = "all",
            loss_weights: LossWeights | None = None, template: str = "published",
            dtype: torch.dtype | None = None) -> GLUS:
    """The full-size GLUS built on `device`: on "meta" without weights, elsewhere with random weights (the
    modules' own initialisation; for speed and memory checks, never for results). The keyword arguments are
    `LisaGLUSBuilder`'s (see `LisaGLUSBuilder.build_on_meta`); `dtype` is the multimodal LM's, as `load_lisa`
    casts it (SAM-2 stays float32). The LM is created in that dtype, so 7B float32 weights never exist.
    (SAM-2's Hiera cannot be built on meta: it is built on the CPU, 0.9 GB for Hiera-L, then moved.)"""
    clip_cfg, llama_cfg = lisa_7b_configs()
    with torch.device(device), _default_dtype(dtype):
        mllm = MultimodalLM(CLIPVisionModel(clip_cfg), LlamaForCausalLM(llama_cfg), vl or VisionLanguageConfig())
        if lora:
            apply_lora(mllm, lora_r, lora_alpha, lora_dropout)
        set_lm_trainables(mllm, embeddings=embeddings, lm_head=True, projector=True)
        if dtype is not None:
            mllm.to(dtype)
    seg = SAM2Segmenter(sam_config, image_size=sam_image_size, memory=memory, **(segmenter or {})).to(device)
    with torch.device(device):
        return GLUS(mllm, seg, loss_weights, template=template)


@contextmanager
def _default_dtype(dtype: torch.dtype | None):
    saved = torch.get_default_dtype()
    torch.set_default_dtype(dtype or saved)
    try:
        yield
    finally:
        torch.set_default_dtype(saved)


class LisaGLUSBuilder:
    """GLUS from LISA-7B-v1 (CLIP ViT-L/14 + Vicuna-7B) + SAM-2 Hiera-L: LoRA r=8 on q,v, trained embeddings,
    lm_head, projector, [SEG] projection and mask decoder. The defaults are the published GLUS (SAM-2.0
    `sam2_hiera_l`, the published memory bank: frozen, detached, no temporal encoding; published prompts;
    CLIP centre crop); `memory`, `sam_config` and `template` make our variants."""

    def __init__(self, lisa_folder: str = "checkpoints/LISA-7B-v1", sam_config: str = "sam2_hiera_l",
                 sam_checkpoint: str = "checkpoints/sam2/sam2_hiera_large.pt", clip_folder: str | None = None,
                 sam_image_size: int = 1024, pooling: str = "strip", clip_resize: str = "crop", lora_r: int = 8,
                 lora_alpha: int = 16, lora_dropout: float = 0.05, embeddings: str = "all",
                 segmenter: dict | None = None, memory: dict | None = None, loss_weights: dict | None = None,
                 template: str = "published", dtype: str = "float32"):
        self.__dict__.update({k: v for k, v in locals().items() if k != "self"})

    def required_paths(self) -> list[tuple[str, str]]:
        """(path, how to get it) for every input this builder reads."""
        how = "put it in place by hand: see checkpoints/README.md"
        paths = [(self.lisa_folder, how), (self.sam_checkpoint, how)]
        if self.clip_folder:
            paths.append((self.clip_folder, how))
        return paths

    def build_on_meta(self):
        """(GLUS on the meta device with this recipe's settings and LISA-7B-v1's shapes, the tokenizer or None):
        no checkpoint is read; the tokenizer comes from `lisa_folder` when that folder is present."""
        vl = VisionLanguageConfig(pooling=self.pooling, clip_resize=self.clip_resize)
        model = glus_7b_on_meta(self.sam_config, memory=self.memory, sam_image_size=self.sam_image_size,
                                segmenter=self.segmenter, vl=vl, lora_r=self.lora_r, lora_alpha=self.lora_alpha,
                                lora_dropout=self.lora_dropout, embeddings=self.embeddings,
                                loss_weights=LossWeights(**(self.loss_weights or {})), template=self.template,
                                dtype=getattr(torch, self.dtype))
        tokenizer = None
        if Path(self.lisa_folder).is_dir():
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(self.lisa_folder, local_files_only=True)
            add_glus_tokens(tokenizer)
        return model, tokenizer

    def build(self):
        vl = VisionLanguageConfig(pooling=self.pooling, clip_resize=self.clip_resize)
        mllm, tokenizer, _ = load_lisa(self.lisa_folder, clip_folder=self.clip_folder, vl=vl,
                                       dtype=getattr(torch, self.dtype))
        apply_lora(mllm, self.lora_r, self.lora_alpha, self.lora_dropout)
        set_lm_trainables(mllm, embeddings=self.embeddings,
                          new_token_ids=tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS)))
        segmenter = SAM2Segmenter(self.sam_config, self.sam_image_size, self.sam_checkpoint, memory=self.memory,
                                  **(self.segmenter or {}))
        return GLUS(mllm, segmenter, LossWeights(**(self.loss_weights or {})), template=self.template), tokenizer


class RandomWeights:
    """Mixed into a folder builder: the same recipe settings, random weights built straight on `device`, no
    checkpoint read (the recipe's paths are accepted and ignored). Speed and memory only: never for results."""

    def __init__(self, device: str = "cuda", **kwargs):
        super().__init__(**kwargs)
        self.device = device

    def required_paths(self) -> list[tuple[str, str]]:
        return []


class RandomWeightsGLUSBuilder(RandomWeights, LisaGLUSBuilder):
    """`LisaGLUSBuilder`'s model (the same recipe settings, LISA-7B-v1 + SAM-2 shapes) with random weights, built
    straight on `device`: what `glus tools gpu-check` trains and runs where no checkpoint is present. The checkpoint
    paths of the recipe are accepted and not read. The tokenizer is the tiny one (LISA's is not offline); its
    ids fit LISA's 32003-row embedding. Speed and memory only: never for results."""

    def build(self):
        tokenizer = build_tiny_tokenizer()
        vl = VisionLanguageConfig(pooling=self.pooling, clip_resize=self.clip_resize)
        model = glus_7b(self.device, self.sam_config, memory=self.memory, sam_image_size=self.sam_image_size,
                        segmenter=self.segmenter, vl=vl, lora_r=self.lora_r, lora_alpha=self.lora_alpha,
                        lora_dropout=self.lora_dropout, embeddings=self.embeddings,
                        loss_weights=LossWeights(**(self.loss_weights or {})), template=self.template,
                        dtype=getattr(torch, self.dtype))
        return model, tokenizer


def published_glus(mllm: MultimodalLM, sam_config: str = "sam2_hiera_l", sam_image_size: int = 1024,
                   sam_checkpoint: str | None = None) -> GLUS:
    """GLUS around a loaded multimodal LM, with the published settings: SAM-2.0 Hiera-L, the published memory
    bank (SAM2MemoryBank's defaults), the published prompt templates. (The CLIP preprocessing is the mllm's:
    `VisionLanguageConfig.clip_resize`, "crop" by default as published.)"""
    segmenter = SAM2Segmenter(sam_config, sam_image_size, sam_checkpoint)
    return GLUS(mllm, segmenter, template="published")
