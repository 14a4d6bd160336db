"""Export what inference needs, from any strategy: the LoRA adapter in peft's format, every other trained
tensor in safetensors, the resolved recipe and the tokenizer. `load_export` rebuilds the model from them."""
from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file

from glus.model.errors import CheckpointError

ADAPTER, HEADS, RECIPE, TOKENIZER = "adapter", "heads.safetensors", "recipe.yaml", "tokenizer"


def export_model(module, out: str | Path, recipe: dict) -> Path:
    """Write OUT/{adapter/, heads.safetensors, recipe.yaml, tokenizer/} atomically (a temporary folder renamed)."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model = module.model
    lm = model.mllm.language_model
    if hasattr(lm, "save_pretrained") and hasattr(lm, "peft_config"):
        lm.save_pretrained(str(tmp / ADAPTER))
    trained = {name: p.detach().cpu().contiguous() for name, p in model.named_parameters()
               if p.requires_grad and "lora_" not in name}
    save_file(trained, str(tmp / HEADS))
    (tmp / RECIPE).write_text(yaml.safe_dump(recipe, sort_keys=False))
    module.tokenizer.save_pretrained(str(tmp / TOKENIZER))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def instantiate(spec):
    """A {class_path, init_args} tree (LightningCLI's YAML form) -> objects."""
    if isinstance(spec, dict) and "class_path" in spec:
        module, _, name = spec["class_path"].rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        return cls(**{k: instantiate(v) for k, v in (spec.get("init_args") or {}).items()})
    if isinstance(spec, dict):
        return {k: instantiate(v) for k, v in spec.items()}
    return spec


def load_export(folder: str | Path):
    """(GLUS in eval mode, tokenizer, recipe) from an export folder; strict about the trained tensors."""
    from peft import set_peft_model_state_dict

    folder = Path(folder)
    for part in (HEADS, RECIPE):
        if not (folder / part).exists():
            raise CheckpointError(f"{folder / part} is missing: an export holds {ADAPTER}/, {HEADS}, {RECIPE}, "
                                  f"{TOKENIZER}/ (written by glus fit at the end of training)")
    recipe = yaml.safe_load((folder / RECIPE).read_text())
    builder = instantiate(recipe["model"]["init_args"]["builder"])
    model, tokenizer = builder.build()
    heads = load_file(str(folder / HEADS))
    own = dict(model.named_parameters())
    unknown = sorted(set(heads) - set(own))
    if unknown:
        raise CheckpointError(f"{folder / HEADS}: tensors the recipe's model does not have: {unknown[:20]}")
    with torch.no_grad():
        for name, value in heads.items():
            own[name].copy_(value)
    if (folder / ADAPTER).is_dir():
        adapter = load_file(str(folder / ADAPTER / "adapter_model.safetensors"))
        result = set_peft_model_state_dict(model.mllm.language_model, adapter)
        if getattr(result, "unexpected_keys", None):
            raise CheckpointError(f"adapter keys the model does not have: {result.unexpected_keys[:20]}")
    return model.eval(), tokenizer, recipe


def export_untrained(out: str | Path, builder_args: dict | None = None,
                     builder: str = "glus.model.factory.TinyGLUSBuilder") -> Path:
    """An export of a freshly initialised model (benchmarks, tests): the same files a trained run writes, so
    everything downstream (predict, evaluate, bench) runs the path a user's export takes."""
    from glus.train.module import GLUSModule

    spec = {"class_path": builder, "init_args": dict(builder_args or {})}
    module = GLUSModule(builder=instantiate(spec))
    recipe = {"model": {"class_path": "glus.train.module.GLUSModule", "init_args": {"builder": spec}}}
    return export_model(module, out, recipe)
