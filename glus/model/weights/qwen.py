"""Qwen2.5-VL from a folder as transformers saves it (`save_pretrained`, or the released Qwen/Qwen2.5-VL-*-Instruct
folders): read by transformers' own `Qwen2_5_VLForConditionalGeneration.from_pretrained`, strictly: every tensor
of the folder used and every parameter of the model found, or the keys are named.

Expected layout (a Hugging Face model folder, e.g. checkpoints/Qwen2.5-VL-7B-Instruct):
  config.json                     model_type "qwen2_5_vl", text_config / vision_config (or the flat older form)
  model*.safetensors (+ index)    the weights
  tokenizer.json, tokenizer_config.json (vocab.json, merges.txt)   Qwen2Tokenizer
"""
from __future__ import annotations

from pathlib import Path

import torch

from glus.model.errors import CheckpointError, format_key_mismatch
from glus.model.mllm.tokenizer import add_glus_tokens

LAYOUT = __doc__.split("Expected layout", 1)[1]
VISION_TOKENS = {"image_token_id": "<|image_pad|>", "vision_start_token_id": "<|vision_start|>",
                 "vision_end_token_id": "<|vision_end|>"}


def load_qwen_vl(folder: str | Path, dtype: torch.dtype = torch.float32):
    """(Qwen2_5_VLForConditionalGeneration, tokenizer with GLUS' [SEG]) from `folder`, strictly."""
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder}: no config.json: not a Qwen2.5-VL folder{LAYOUT}")
    vlm, info = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        str(folder), local_files_only=True, dtype=dtype, output_loading_info=True)
    missing, unexpected = list(info.get("missing_keys") or []), list(info.get("unexpected_keys") or [])
    mismatched = [str(m) for m in info.get("mismatched_keys") or []]
    if missing or unexpected or mismatched:
        raise CheckpointError(format_key_mismatch(f"Qwen2.5-VL weights in {folder}", missing, unexpected)
                              + "".join(f"\n  wrong shape: {m}" for m in mismatched))
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    check_vision_tokens(tokenizer, vlm.config, folder)
    add_glus_tokens(tokenizer, chat="chatml")
    rows = vlm.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:  # the released embeddings have spare rows (152064 for 151665 tokens): [SEG] fits
        vlm.resize_token_embeddings(len(tokenizer))
    return vlm, tokenizer


def check_vision_tokens(tokenizer, config, folder) -> None:
    """The tokenizer's vision tokens must be the ids config.json names (the slots the model fills)."""
    for field, token in VISION_TOKENS.items():
        got = tokenizer.convert_tokens_to_ids(token)
        if got != getattr(config, field):
            raise CheckpointError(f"{folder}: the tokenizer's {token} is id {got}, config.json's {field} is "
                                  f"{getattr(config, field)}: the tokenizer and the weights are not of one model")
