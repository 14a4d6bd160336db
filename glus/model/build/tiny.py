"""The tiny GLUS, built in code: every module of the 7B model at a size that runs on 2 CPU cores.

`tiny_glus()` is what tests use; `TinyGLUSBuilder` is what the synthetic recipes name (LightningCLI class_path).
"""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

from glus.model.glus import GLUS
from glus.model.losses import LossWeights
from glus.model.mllm import MultimodalLM, VisionLanguageConfig, build_tiny_tokenizer
from glus.model.mllm.lora import apply_lora, set_lm_trainables
from glus.model.mllm.templates import get_templates
from glus.model.mllm.tokenizer import SPECIAL_TOKENS
from glus.model.mllm.video import sine_code
from glus.model.pointer import token_grid
from glus.model.segmenter import SAM2Segmenter
from glus.model.weights.heads import copy_adapter, copy_heads
from glus.vocabulary import DENSE_LABELS


# Our variant of the memory (recipe glus_standard_e2e, the synthetic recipe): SAM2MemoryBank arguments.
E2E_MEMORY = {"trainable": True, "end_to_end": True, "temporal_encoding": True, "no_object_embedding": True,
              "encode_conditioned": False}


def tiny_clip_config(**kw) -> CLIPVisionConfig:
    return CLIPVisionConfig(**{"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                               "num_attention_heads": 2, "image_size": 224, "patch_size": 14, **kw})


def tiny_llama_config(vocab_size: int, **kw) -> LlamaConfig:
    return LlamaConfig(**{"vocab_size": vocab_size, "hidden_size": 64, "intermediate_size": 128,
                          "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
                          "max_position_embeddings": 2048, "tie_word_embeddings": False, **kw})


def tiny_language_model(vocab_size: int, embedding_std: float = 0.5, **config) -> LlamaForCausalLM:
    """A 2-layer LLaMA. Its token embeddings start at the scale of the projected visual tokens (norm ~4):
    with LLaMA's default std 0.02 (norm ~0.16) the few text tokens drown among the visual ones and every
    expression gives the same [SEG] state; a pretrained LLM does not have that problem."""
    lm = LlamaForCausalLM(tiny_llama_config(vocab_size, **config))
    with torch.no_grad():
        lm.get_input_embeddings().weight.normal_(0.0, embedding_std)
    return lm


def sine_clip_positions(vision: CLIPVisionModel, norm: float, temperature: float = 20.0) -> None:
    """Start the tiny CLIP's patch position embeddings at a 2-D sine code (SAM-2's `PositionEmbeddingSine`) of
    mean norm `norm`. CLIP's own random init (std 0.02, norm ~0.1) is ~8x weaker than what the patch contents
    vary by on the synthetic frames, so a tower trained from scratch barely knows where a token lies, and the LLM
    cannot see which way an object moves; a pretrained CLIP's positions are strong. The low temperature spreads
    the few frequencies of a 32-channel code over an 8x8 grid. Measured on the synthetic default it does not
    make motion perceivable (docs/embedded_default.md), so recipes leave it off."""
    table = vision.embeddings.position_embedding.weight
    side = vision.config.image_size // vision.config.patch_size
    with torch.no_grad():
        table[1:] = sine_code(table.size(1), side, side, norm, temperature)


def tiny_mllm(tokenizer=None, vl: VisionLanguageConfig | None = None, seed: int = 0) -> tuple[MultimodalLM, object]:
    tokenizer = tokenizer or build_tiny_tokenizer()
    torch.manual_seed(seed)
    vision = CLIPVisionModel(tiny_clip_config())
    lm = tiny_language_model(len(tokenizer))
    mllm = MultimodalLM(vision, lm, vl or VisionLanguageConfig())
    return mllm, tokenizer


def tiny_glus(seed: int = 0, lora: bool = True, embeddings: str = "all", lm_head: bool = True,
              projector: bool = True, vl: VisionLanguageConfig | None = None, segmenter_kwargs: dict | None = None,
              loss_weights: LossWeights | None = None):
    """(GLUS, tokenizer) with LISA's trainable set: LoRA q,v + embeddings + lm_head + projector + [SEG]
    projection + mask decoder; the memory as `segmenter_kwargs["memory"]` says (default: published, frozen)."""
    mllm, tokenizer = tiny_mllm(vl=vl, seed=seed)
    if lora:
        apply_lora(mllm)
    new_ids = tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    set_lm_trainables(mllm, embeddings=embeddings, lm_head=lm_head, projector=projector, new_token_ids=new_ids)
    torch.manual_seed(seed + 1)
    segmenter = SAM2Segmenter("tiny", **(segmenter_kwargs or {}))
    return GLUS(mllm, segmenter, loss_weights), tokenizer


# The make target that rebuilds each committed or pretrained stage folder of the embedded default (Makefile).
STAGE_TARGETS = {"segmenter": "make segmenter-stage (recipes/pretrain/segmenter_synthetic.yaml)",
                 "mllm": "make pretrain (recipes/pretrain/mllm_synthetic.yaml)",
                 "motion": "make motion-stage (recipes/pretrain/motion_name_synthetic.yaml)",
                 "motion_stream": "make motion-stage (recipes/pretrain/motion_stream_synthetic.yaml)"}


def stage_hint(path: str) -> str:
    """How to make a missing stage folder: its make target, or any GLUS export for a folder of another name."""
    return STAGE_TARGETS.get(Path(path).name, "a GLUS export (glus fit writes one to runs/NAME/latest/export)")


class TinyGLUSBuilder:
    """Builds the tiny GLUS for recipes (LightningCLI class_path). Same code paths as the 7B model; since no
    pretrained weights exist offline, the synthetic recipe may also train the vision encoders from scratch."""

    def __init__(self, seed: int = 0, clip_image_size: int = 224, pooling: str = "strip", pool: int = 4,
                 sam_image_size: int = 128, sam_config: str = "tiny", train_image_encoder: bool = False,
                 train_vision_tower: bool = False, train_language_model: bool = False,
                 lora: bool = True, embeddings: str = "all", label_mode: str = "seg",
                 segmenter: dict | None = None, memory: dict | str | None = None, loss_weights: dict | None = None,
                 seg_projection_gain: float = 1.0, template: str = "published", clip_resize: str = "crop",
                 segmenter_init: str | None = None, mllm_init: str | None = None, llm_layers: int = 2,
                 clip_positions: float | None = None, video_layers: int = 0, video_slots: int = 8,
                 dense_labels: str = "motion", video_init: str = "random", pointer: bool = False):
        """segmenter_init: a plain VOS export (the promptable pretraining, recipes/pretrain/segmenter_synthetic.yaml)
        whose segmenter tensors (SAM-2 and the memory, which must be configured alike) start this model's: what a
        pretrained SAM-2 gives the real model. mllm_init: a GLUS export of the alignment stage
        (recipes/pretrain/mllm_synthetic.yaml) whose multimodal LM (vision tower, projector, LM and its LoRA)
        starts this model's: what LLaVA gives the real one. llm_layers: the tiny LLaMA's depth. clip_positions: the
        norm of a 2-D sine code that starts the tiny CLIP's position embeddings (`sine_clip_positions`; None:
        CLIP's random init). video_layers: a video projector (`glus.model.mllm.video`, ours) of that many layers
        between the projector and the LLM, with video_slots frame slots; 0: none, as published. dense_labels: the
        classes of the dense target (loss_weights.motion): "motion" or "object" (`glus.vocabulary.DENSE_LABELS`).
        video_init: how the video projector's slot and place embeddings start ("random" or "sine"). pointer: the
        [SEG] pointer (ours, `glus.model.pointer`): each [SEG]'s map of its query frame's visual tokens is SAM-2's
        mask prompt; it needs CLIP to see the frame SAM-2 sees (clip_resize: squash) and tokens on a grid.

        seg_projection_gain scales the initial last layer of the [SEG] projection. Its default init gives
        prompts of norm ~1.4, against ~6-7 for the tiny decoder's own tokens and point prompts; a decoder trained
        from scratch then learns to ignore the prompt before the LLM has learnt to fill it (the synthetic
        recipe uses 5)."""
        self.seed, self.label_mode = seed, label_mode
        self.vl = VisionLanguageConfig(pooling=pooling, pool=pool, clip_resize=clip_resize, video_layers=video_layers,
                                       video_slots=video_slots, video_init=video_init)
        self.memory, self.template = memory, template
        self.clip_image_size, self.train_vision_tower = clip_image_size, train_vision_tower
        self.lora, self.embeddings, self.train_language_model = lora, embeddings, train_language_model
        self.sam_config = sam_config
        self.segmenter = {"image_size": sam_image_size, "train_image_encoder": train_image_encoder, **(segmenter or {})}
        self.loss_weights = LossWeights(**(loss_weights or {}))
        self.seg_projection_gain = seg_projection_gain
        self.segmenter_init, self.mllm_init, self.llm_layers = segmenter_init, mllm_init, llm_layers
        self.clip_positions = clip_positions
        if dense_labels not in DENSE_LABELS:
            raise ValueError(f"dense_labels {dense_labels!r}: use one of {sorted(DENSE_LABELS)}")
        self.dense_labels = dense_labels
        if pointer and clip_resize != "squash":
            raise ValueError(f"pointer: true needs clip_resize: squash (got {clip_resize!r}): the pointer's map "
                             "covers what CLIP sees, and must cover the whole frame, as SAM-2's input does")
        self.pointer = pointer

    def required_paths(self) -> list[tuple[str, str]]:
        return [(path, stage_hint(path)) for path in (self.segmenter_init, self.mllm_init) if path]

    def make_tokenizer(self):
        return build_tiny_tokenizer()

    def make_mllm(self, tokenizer):
        """The multimodal LM at the tiny shapes, from this builder's seed (the global RNG is seeded first)."""
        vision = CLIPVisionModel(tiny_clip_config(image_size=self.clip_image_size))
        if self.clip_positions is not None:
            sine_clip_positions(vision, self.clip_positions)
        lm = tiny_language_model(len(tokenizer), num_hidden_layers=self.llm_layers)
        return MultimodalLM(vision, lm, self.vl, train_vision_tower=self.train_vision_tower)

    def build(self):
        tokenizer = self.make_tokenizer()
        torch.manual_seed(self.seed)
        mllm = self.make_mllm(tokenizer)
        if self.lora:
            apply_lora(mllm)
        new_ids = tokenizer.convert_tokens_to_ids(list(get_templates(self.template).chat_format.added_tokens))
        set_lm_trainables(mllm, embeddings=self.embeddings, base_layers=self.train_language_model,
                          new_token_ids=new_ids)
        torch.manual_seed(self.seed + 1)
        segmenter = SAM2Segmenter(self.sam_config, memory=self.memory, **self.segmenter)
        classes = len(DENSE_LABELS[self.dense_labels]) if self.loss_weights.motion else 0
        grid = token_grid(mllm.patches_per_frame(), self.vl.pooling, self.vl.pool) if self.pointer else None
        model = GLUS(mllm, segmenter, self.loss_weights, seg_projection_gain=self.seg_projection_gain,
                     template=self.template, motion_classes=classes, pointer_grid=grid)
        if self.segmenter_init:
            copy_heads(model, self.segmenter_init, prefix="segmenter.")
        if self.mllm_init:
            copy_heads(model, self.mllm_init, prefix="mllm.")
            copy_adapter(model, self.mllm_init)
        return model, tokenizer
