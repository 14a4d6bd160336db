"""Weights for inference: rebuild a GLUS from a folder (`load_model`), without importing the training code.

Two kinds of folder:
- an export (written by `glus fit`, see `glus.model.export`): the LoRA adapter in peft's format, every other
  trained tensor in safetensors, the resolved recipe and the tokenizer;
- a released GLUS checkpoint (GLUS-S, GLUS-S-partial, GLUS-A: `glus.model.released`), run as published.
"""
from __future__ import annotations

import importlib
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from glus.model.errors import CheckpointError, format_key_mismatch

ADAPTER, HEADS, RECIPE, TOKENIZER = "adapter", "heads.safetensors", "recipe.yaml", "tokenizer"
EXPORT_LAYOUT = (f"an export folder holds {ADAPTER}/, {HEADS}, {RECIPE} and {TOKENIZER}/ "
                 "(glus fit writes one at the end of training: runs/<recipe>/latest/export)")


def load_model(path: str | Path, sam_config: str = "sam2_hiera_l", sam_image_size: int = 1024,
               clip_folder: str | None = None, dtype: torch.dtype = torch.float32):
    """(GLUS in eval mode, tokenizer, recipe) from a weights folder, whichever kind it is. For a released
    folder, the recipe is the published inference's (4 context frames) and `sam_config`/`clip_folder` say
    what the folder does not (the published scripts: sam2_hiera_l, openai/clip-vit-large-patch14)."""
    from glus.model.released import is_released_folder, load_released

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


def instantiate(spec):
    """A {class_path, init_args} tree (LightningCLI's YAML form) -> objects."""
    if isinstance(spec, dict) and "class_path" in spec:
        module, _, name = spec["class_path"].rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        return cls(**{k: instantiate(v) for k, v in (spec.get("init_args") or {}).items()})
    if isinstance(spec, dict):
        return {k: instantiate(v) for k, v in spec.items()}
    return spec


def in_heads(name: str) -> bool:
    """Whether an export keeps a trained parameter in heads.safetensors: all but the language model's LoRA,
    which goes to the peft adapter folder (LoRA elsewhere, e.g. I-LoRA on SAM-2's encoder, is a head)."""
    return not (name.startswith("mllm.") and "lora_" in name)


def copy_heads(model, folder: str | Path, prefix: str = "") -> list[str]:
    """Copy an export's heads.safetensors into `model` (which may have more parameters, e.g. a new router):
    every tensor of the file whose name starts with `prefix` must exist in the model with its shape (e.g.
    "segmenter." starts a GLUS' SAM-2 and memory from a plain VOS export). Returns the names copied."""
    path = Path(folder) / HEADS
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: init_from must name an export folder\n{EXPORT_LAYOUT}")
    heads = {n: v for n, v in load_file(str(path)).items() if n.startswith(prefix)}
    own = dict(model.named_parameters())
    unknown = sorted(n for n in heads if n not in own or own[n].shape != heads[n].shape)
    if unknown or not heads:
        raise CheckpointError(f"{path}: tensors this model lacks or shapes it differs in: {unknown[:20]} (was the "
                              "export made with another SAM-2 config or memory?)" if heads else
                              f"{path} holds no tensor named {prefix}*: is it the right kind of export?")
    with torch.no_grad():
        for name, value in heads.items():
            own[name].copy_(value)
    return sorted(heads)


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


def copy_adapter(model, folder: str | Path) -> None:
    """The LM's LoRA of an export (peft's adapter folder) into `model`."""
    from peft import set_peft_model_state_dict

    path = Path(folder) / ADAPTER / "adapter_model.safetensors"
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: {EXPORT_LAYOUT}")
    result = set_peft_model_state_dict(model.mllm.language_model, load_file(str(path)))
    if getattr(result, "unexpected_keys", None):
        raise CheckpointError(f"adapter keys the model does not have: {result.unexpected_keys[:20]}")
