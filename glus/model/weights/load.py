"""Weights for inference: rebuild a GLUS from a folder (`load_model`), without importing the training code.

Two kinds of folder:
- an export (written by `glus fit`, see `glus.model.weights.export`): the LoRA adapter in peft's format, every other
  trained tensor in safetensors, the resolved recipe and the tokenizer;
- a released GLUS checkpoint (GLUS-S, GLUS-S-partial, GLUS-A: `glus.model.weights.released`), run as published.
"""
from __future__ import annotations

from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from glus.model.errors import CheckpointError, format_key_mismatch
from glus.model.resolve import instantiate
from glus.model.weights.heads import ADAPTER, EXPORT_LAYOUT, HEADS, RECIPE, copy_adapter, in_heads
from glus.model.weights.released import is_released_folder, load_released


def load_model(path: str | Path, sam_config: str = "sam2_hiera_l", sam_image_size: int = 1024,
               clip_folder: str | None = None, dtype: torch.dtype = torch.float32):
    """(GLUS in eval mode, tokenizer, recipe) from a weights folder, whichever kind it is. For a released
    folder, the recipe is the published inference's (4 context frames) and `sam_config`/`clip_folder` say
    what the folder does not (the published scripts: sam2_hiera_l, openai/clip-vit-large-patch14)."""
    folder = Path(path)
    if (folder / RECIPE).is_file():
        return load_export(folder)
    if is_released_folder(folder):
        model, tokenizer, info = load_released(folder, sam_config=sam_config, sam_image_size=sam_image_size,
                                             clip_folder=clip_folder, dtype=dtype)  # 7B: never in fp32 on the host
        return model, tokenizer, {"model": {"init_args": {"num_context": 4, "num_query": 4}}, "released": info}
    what = "not found" if not folder.exists() else f"is neither an export (no {RECIPE}) nor a released GLUS folder"
    raise CheckpointError(f"{folder} {what}: {EXPORT_LAYOUT}; a released GLUS folder holds config.json, the "
                          "tokenizer and weights with model.visual_model.* and model.text_hidden_fcs.*")


def load_export(folder: str | Path):
    """(GLUS in eval mode, tokenizer, recipe) from an export folder; strict about the trained tensors."""
    folder = Path(folder)
    for part in (HEADS, RECIPE):
        if not (folder / part).exists():
            raise CheckpointError(f"{folder / part} is missing: {EXPORT_LAYOUT}")
    recipe = yaml.safe_load((folder / RECIPE).read_text())
    builder = instantiate(recipe["model"]["init_args"]["builder"])
    model, tokenizer = builder.build()
    if recipe["model"].get("init_args", {}).get("segmentation") is False:  # the alignment stage's export
        model.language_only()
    heads = load_file(str(folder / HEADS))
    own = dict(model.named_parameters())
    unknown = sorted(set(heads) - set(own))
    missing = sorted(n for n, p in own.items() if p.requires_grad and in_heads(n) and n not in heads)
    if unknown or missing:  # a missing trained tensor would silently keep its random initial value
        raise CheckpointError(format_key_mismatch(f"{folder / HEADS} against its recipe's model", missing, unknown)
                              + f"\n{EXPORT_LAYOUT}")
    with torch.no_grad():
        for name, value in heads.items():
            own[name].copy_(value)
    if (folder / ADAPTER).is_dir():
        copy_adapter(model, folder)
    return model.eval(), tokenizer, recipe
