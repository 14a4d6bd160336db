"""GLUS on Qwen2.5-VL (`glus.model.mllm.qwen`): the tiny model of the synthetic recipe (`TinyQwenGLUSBuilder`),
the real one from a Qwen2.5-VL folder (`QwenGLUSBuilder`), its shapes on the meta device (`build_on_meta`) and
with random weights for the GPU check (`RandomWeightsQwenGLUSBuilder`)."""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from glus.model.build.published import RandomWeights, _default_dtype
from glus.model.build.tiny import TinyGLUSBuilder
from glus.model.glus import GLUS
from glus.model.losses import LossWeights
from glus.model.mllm.lora import apply_lora, set_lm_trainables
from glus.model.mllm.qwen import QwenVLMultimodalLM
from glus.model.mllm.templates import CHATS, get_templates
from glus.model.mllm.tokenizer import build_tiny_qwen_tokenizer
from glus.model.segmenter import SAM2Segmenter
from glus.model.weights.qwen import VISION_TOKENS, load_qwen_vl

# The released models' config.json values (Qwen/Qwen2.5-VL-{7B,3B}-Instruct); the vision encoder is the same.
QWEN_VISION = {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "patch_size": 14,
               "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112, "tokens_per_second": 2,
               "fullatt_block_indexes": [7, 15, 23, 31], "hidden_act": "silu"}
QWEN_TEXT = {
    "7b": {"vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
           "num_attention_heads": 28, "num_key_value_heads": 4, "tie_word_embeddings": False},
    "3b": {"vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
           "num_attention_heads": 16, "num_key_value_heads": 2, "tie_word_embeddings": True},
}
QWEN_ROPE = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}
QWEN_TOKEN_IDS = {"image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652,
                  "vision_end_token_id": 151653}


def qwen2_5_vl_config(size: str, token_ids: dict | None = None) -> Qwen2_5_VLConfig:
    """Qwen2.5-VL-7B's or -3B's shapes; `token_ids` replaces the vision token ids (a tiny tokenizer's)."""
    if size not in QWEN_TEXT:
        raise ValueError(f"Qwen2.5-VL size {size!r}: one of {sorted(QWEN_TEXT)}")
    text = dict(QWEN_TEXT[size])
    tie = text.pop("tie_word_embeddings")
    text.update(max_position_embeddings=128000, rms_norm_eps=1e-6, rope_parameters=dict(QWEN_ROPE),
                bos_token_id=151643, eos_token_id=151645)
    vision = {**QWEN_VISION, "out_hidden_size": text["hidden_size"]}
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=tie,
                            **{**QWEN_TOKEN_IDS, **(token_ids or {})})


def token_ids_of(tokenizer) -> dict:
    ids = {field: tokenizer.convert_tokens_to_ids(token) for field, token in VISION_TOKENS.items()}
    return {**ids, "video_token_id": tokenizer.convert_tokens_to_ids("<|video_pad|>")}


def tiny_qwen_config(tokenizer, llm_layers: int = 2) -> Qwen2_5_VLConfig:
    """Every module of Qwen2.5-VL at a CPU size: 14 px patches merged 2x2 (as the real model), window attention
    over 2x2 merge units with full attention in the last block, M-RoPE sections in the real proportions."""
    text = {"vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": llm_layers, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "bos_token_id": None,
            "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}}
    vision = {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "patch_size": 14,
              "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 56, "tokens_per_second": 2,
              "fullatt_block_indexes": [1], "out_hidden_size": 64}
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False,
                            **token_ids_of(tokenizer))


class TinyQwenGLUSBuilder(TinyGLUSBuilder):
    """The tiny GLUS with a tiny random Qwen2.5-VL as its multimodal LM (and a tiny `Qwen2Tokenizer`): the same
    settings as `TinyGLUSBuilder` (segmenter, memory, losses, stages) where they apply. Frames are
    `clip_image_size` pixels a side (112: 16 visual tokens, as the tiny LISA's), squashed, not cropped.
    Not on this backbone: a video projector, CLIP position codes and the LISA-based alignment stage."""

    def __init__(self, clip_image_size: int = 112, clip_resize: str = "squash", template: str = "chatml_readable",
                 visual_gain: float = 20.0, **kwargs):
        """visual_gain scales the merger's last layer at initialisation. A random Qwen2.5-VL's merged tokens have
        a norm of 0.24 against 4.0 for the tiny LM's word embeddings (LISA's projected CLIP tokens: 5.0): at that
        scale the prompt is all text to the LLM, and a first run of the tiny recipe learnt nothing from the
        frames (J&F 0.354, its blank-text control 0.350). 20 brings them to 4.9; a pretrained Qwen has matched
        scales and needs nothing of the kind."""
        self.visual_gain = visual_gain
        unsupported = [k for k in ("video_layers", "clip_positions", "mllm_init") if kwargs.get(k)]
        if unsupported:
            raise ValueError(f"TinyQwenGLUSBuilder does not take {unsupported}: they are parts of the LISA backbone")
        if get_templates(template).chat != "chatml":
            raise ValueError(f"template {template!r} is not a ChatML set: Qwen2.5-VL reads ChatML "
                             "(chatml_readable, chatml_published)")
        super().__init__(clip_image_size=clip_image_size, clip_resize=clip_resize, template=template,
                         pooling="none", pool=1, **kwargs)

    def make_tokenizer(self):
        return build_tiny_qwen_tokenizer()

    def make_mllm(self, tokenizer):
        vlm = Qwen2_5_VLForConditionalGeneration(tiny_qwen_config(tokenizer, self.llm_layers))
        with torch.no_grad():  # at the visual tokens' scale, as the tiny LLaMA's (`tiny_language_model`)
            vlm.get_input_embeddings().weight.normal_(0.0, 0.5)
            last = vlm.model.visual.merger.mlp[2]
            last.weight.mul_(self.visual_gain)
            last.bias.mul_(self.visual_gain)
        return QwenVLMultimodalLM(vlm, self.clip_image_size, self.vl.clip_resize, self.train_vision_tower)


class QwenGLUSBuilder:
    """GLUS from a Qwen2.5-VL folder + SAM-2: LoRA on the LM's q, v; [SEG]'s embedding and LM-head rows (not the
    whole 152k-row tables, which LISA's recipe trains: `embeddings`), the merger (the projector), the [SEG]
    projection and the mask decoder train. `size` only shapes `build_on_meta` when the folder is absent."""

    def __init__(self, qwen_folder: str = "checkpoints/Qwen2.5-VL-7B-Instruct", size: str = "7b",
                 sam_config: str = "sam2_hiera_l", sam_checkpoint: str = "checkpoints/sam2/sam2_hiera_large.pt",
                 sam_image_size: int = 1024, image_size: int = 448, clip_resize: str = "squash", lora_r: int = 8,
                 lora_alpha: int = 16, lora_dropout: float = 0.05, embeddings: str = "new_rows",
                 segmenter: dict | None = None, memory: dict | None = None, loss_weights: dict | None = None,
                 template: str = "chatml_published", dtype: str = "bfloat16"):
        self.__dict__.update({k: v for k, v in locals().items() if k != "self"})

    def required_paths(self) -> list[tuple[str, str]]:
        how = "put it in place by hand: see checkpoints/README.md"
        return [(self.qwen_folder, how), (self.sam_checkpoint, how)]

    def _finish(self, mllm, tokenizer, device, sam_checkpoint):
        apply_lora(mllm, self.lora_r, self.lora_alpha, self.lora_dropout)
        set_lm_trainables(mllm, embeddings=self.embeddings, new_token_ids=_new_ids(tokenizer))
        seg = SAM2Segmenter(self.sam_config, self.sam_image_size, sam_checkpoint, memory=self.memory,
                            **(self.segmenter or {})).to(device)
        with torch.device(device):
            return GLUS(mllm, seg, LossWeights(**(self.loss_weights or {})), template=self.template)

    def build(self):
        vlm, tokenizer = load_qwen_vl(self.qwen_folder, dtype=getattr(torch, self.dtype))
        mllm = QwenVLMultimodalLM(vlm, self.image_size, self.clip_resize)
        return self._finish(mllm, tokenizer, "cpu", self.sam_checkpoint), tokenizer

    def shaped(self, device, tokenizer):
        """The model at this recipe's shapes built on `device` (random weights; none on "meta"), its vision token
        ids those of `tokenizer`."""
        token_ids = token_ids_of(tokenizer)
        with torch.device(device), _default_dtype(getattr(torch, self.dtype)):
            vlm = Qwen2_5_VLForConditionalGeneration(qwen2_5_vl_config(self.size, token_ids))
            mllm = QwenVLMultimodalLM(vlm, self.image_size, self.clip_resize)
        return self._finish(mllm, tokenizer, device, None)

    def build_on_meta(self):
        """(GLUS on the meta device at the `size` shapes, the folder's tokenizer or None; without the folder the
        vision token ids are the tiny Qwen tokenizer's, which the cost model then stands in with)."""
        tokenizer = None
        if Path(self.qwen_folder).is_dir():
            from transformers import AutoTokenizer

            from glus.model.mllm.tokenizer import add_glus_tokens

            tokenizer = AutoTokenizer.from_pretrained(self.qwen_folder, local_files_only=True)
            add_glus_tokens(tokenizer, chat="chatml")
        return self.shaped("meta", tokenizer or build_tiny_qwen_tokenizer()), tokenizer


class RandomWeightsQwenGLUSBuilder(RandomWeights, QwenGLUSBuilder):
    """`QwenGLUSBuilder`'s model at the `size` shapes with random weights on `device`, and the tiny Qwen tokenizer
    (its ids fit the 152k-row embedding; the config's vision token ids are set to its): for speed and memory."""

    def build(self):
        tokenizer = build_tiny_qwen_tokenizer()
        return self.shaped(self.device, tokenizer), tokenizer


def _new_ids(tokenizer) -> list[int]:
    return tokenizer.convert_tokens_to_ids(list(CHATS["chatml"].added_tokens))
