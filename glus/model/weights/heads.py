"""The parts of an export folder, and copying its trained tensors into a model (a stage starting another)."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from glus.model.errors import CheckpointError

ADAPTER, HEADS, RECIPE, TOKENIZER = "adapter", "heads.safetensors", "recipe.yaml", "tokenizer"
EXPORT_LAYOUT = (f"an export folder holds {ADAPTER}/, {HEADS}, {RECIPE} and {TOKENIZER}/ "
                 "(glus fit writes one at the end of training: runs/<recipe>/latest/export)")


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


def copy_adapter(model, folder: str | Path) -> None:
    """The LM's LoRA of an export (peft's adapter folder) into `model`."""
    from peft import set_peft_model_state_dict

    path = Path(folder) / ADAPTER / "adapter_model.safetensors"
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: {EXPORT_LAYOUT}")
    result = set_peft_model_state_dict(model.mllm.language_model, load_file(str(path)))
    if getattr(result, "unexpected_keys", None):
        raise CheckpointError(f"adapter keys the model does not have: {result.unexpected_keys[:20]}")
