"""Tiny configurations built in code: every module of the 7B model, at a size that runs on 2 CPU cores.

`tiny_glus()` is what tests and the synthetic recipe use; the 7B shapes are built on the meta device by
`lisa_7b_shapes()` to count parameters without weights.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

from glus.model.glus import GLUS
from glus.model.losses import LossWeights
from glus.model.pointer import token_grid
from glus.model.mllm import MultimodalLM, VisionLanguageConfig, build_tiny_tokenizer
from glus.model.mllm.lora import apply_lora, set_lm_trainables
from glus.model.mllm.tokenizer import SPECIAL_TOKENS
from glus.model.segmenter import SAM2Segmenter


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
    make motion perceivable (README, "The embedded default"), so recipes leave it off."""
    from glus.model.mllm.video import sine_code

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
    for parameter counts, trainable-set checks and the cost model (`glus.eval.cost`). The keyword arguments
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


# The make target that rebuilds each committed or pretrained stage folder of the embedded default (Makefile).
STAGE_TARGETS = {"segmenter": "make segmenter-stage (recipes/pretrain/segmenter_synthetic.yaml)",
                 "mllm": "make pretrain (recipes/pretrain/mllm_synthetic.yaml)",
                 "motion": "make motion-stage (recipes/pretrain/motion_name_synthetic.yaml)",
                 "motion_stream": "make motion-stage (recipes/pretrain/motion_stream_synthetic.yaml)"}


def stage_hint(path: str) -> str:
    """How to make a missing stage folder: its make target, or any GLUS export for a folder of another name."""
    from pathlib import Path

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
        from glus.vocabulary import DENSE_LABELS

        if dense_labels not in DENSE_LABELS:
            raise ValueError(f"dense_labels {dense_labels!r}: use one of {sorted(DENSE_LABELS)}")
        self.dense_labels = dense_labels
        if pointer and clip_resize != "squash":
            raise ValueError(f"pointer: true needs clip_resize: squash (got {clip_resize!r}): the pointer's map "
                             "covers what CLIP sees, and must cover the whole frame, as SAM-2's input does")
        self.pointer = pointer

    def required_paths(self) -> list[tuple[str, str]]:
        return [(path, stage_hint(path)) for path in (self.segmenter_init, self.mllm_init) if path]

    def build(self):
        tokenizer = build_tiny_tokenizer()
        torch.manual_seed(self.seed)
        vision = CLIPVisionModel(tiny_clip_config(image_size=self.clip_image_size))
        if self.clip_positions is not None:
            sine_clip_positions(vision, self.clip_positions)
        lm = tiny_language_model(len(tokenizer), num_hidden_layers=self.llm_layers)
        mllm = MultimodalLM(vision, lm, self.vl, train_vision_tower=self.train_vision_tower)
        if self.lora:
            apply_lora(mllm)
        set_lm_trainables(mllm, embeddings=self.embeddings, base_layers=self.train_language_model,
                          new_token_ids=tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS)))
        torch.manual_seed(self.seed + 1)
        segmenter = SAM2Segmenter(self.sam_config, memory=self.memory, **self.segmenter)
        from glus.vocabulary import DENSE_LABELS

        classes = len(DENSE_LABELS[self.dense_labels]) if self.loss_weights.motion else 0
        grid = token_grid(mllm.patches_per_frame(), self.vl.pooling, self.vl.pool) if self.pointer else None
        model = GLUS(mllm, segmenter, self.loss_weights, seg_projection_gain=self.seg_projection_gain,
                     template=self.template, motion_classes=classes, pointer_grid=grid)
        from glus.model.load import copy_adapter, copy_heads

        if self.segmenter_init:
            copy_heads(model, self.segmenter_init, prefix="segmenter.")
        if self.mllm_init:
            copy_heads(model, self.mllm_init, prefix="mllm.")
            copy_adapter(model, self.mllm_init)
        return model, tokenizer


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
        from pathlib import Path

        vl = VisionLanguageConfig(pooling=self.pooling, clip_resize=self.clip_resize)
        model = glus_7b_on_meta(self.sam_config, memory=self.memory, sam_image_size=self.sam_image_size,
                                segmenter=self.segmenter, vl=vl, lora_r=self.lora_r, lora_alpha=self.lora_alpha,
                                lora_dropout=self.lora_dropout, embeddings=self.embeddings,
                                loss_weights=LossWeights(**(self.loss_weights or {})), template=self.template,
                                dtype=getattr(torch, self.dtype))
        tokenizer = None
        if Path(self.lisa_folder).is_dir():
            from transformers import AutoTokenizer

            from glus.model.mllm import add_glus_tokens

            tokenizer = AutoTokenizer.from_pretrained(self.lisa_folder, local_files_only=True)
            add_glus_tokens(tokenizer)
        return model, tokenizer

    def build(self):
        from glus.model.mllm.loading import load_lisa

        vl = VisionLanguageConfig(pooling=self.pooling, clip_resize=self.clip_resize)
        mllm, tokenizer, _ = load_lisa(self.lisa_folder, clip_folder=self.clip_folder, vl=vl,
                                       dtype=getattr(torch, self.dtype))
        apply_lora(mllm, self.lora_r, self.lora_alpha, self.lora_dropout)
        set_lm_trainables(mllm, embeddings=self.embeddings,
                          new_token_ids=tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS)))
        segmenter = SAM2Segmenter(self.sam_config, self.sam_image_size, self.sam_checkpoint, memory=self.memory,
                                  **(self.segmenter or {}))
        return GLUS(mllm, segmenter, LossWeights(**(self.loss_weights or {})), template=self.template), tokenizer


class RandomWeightsGLUSBuilder(LisaGLUSBuilder):
    """`LisaGLUSBuilder`'s model (the same recipe settings, LISA-7B-v1 + SAM-2 shapes) with random weights, built
    straight on `device`: what `glus gpu-check` trains and runs where no checkpoint is present. The checkpoint
    paths of the recipe are accepted and not read. The tokenizer is the tiny one (LISA's is not offline); its
    ids fit LISA's 32003-row embedding. Speed and memory only: never for results."""

    def __init__(self, device: str = "cuda", **kwargs):
        super().__init__(**kwargs)
        self.device = device

    def required_paths(self) -> list[tuple[str, str]]:
        return []

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
