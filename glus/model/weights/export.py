"""Write an export, the weights folder inference loads (`glus.model.weights.load`): the LoRA adapter in peft's format,
every other trained tensor in safetensors, the resolved recipe and the tokenizer. Written atomically, from any
strategy. It sits beside the loader, below training, so that benchmarks and tests make exports without
importing the training code."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import yaml
from safetensors.torch import save_file

from glus.model.weights.heads import ADAPTER, HEADS, RECIPE, TOKENIZER, in_heads

from glus.model.resolve import instantiate


def export_model(model, tokenizer, out: str | Path, recipe: dict) -> Path:
    """Write OUT/{adapter/, heads.safetensors, recipe.yaml, tokenizer/} atomically (a temporary folder renamed);
    a model without a language model (the plain VOS path) has neither adapter nor tokenizer."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    lm = model.mllm.language_model if hasattr(model, "mllm") else None  # the plain VOS model has no LLM
    if hasattr(lm, "save_pretrained") and hasattr(lm, "peft_config"):
        lm.save_pretrained(str(tmp / ADAPTER))
    trained = {name: p.detach().cpu().contiguous() for name, p in model.named_parameters()
               if p.requires_grad and in_heads(name)}
    save_file(trained, str(tmp / HEADS))
    (tmp / RECIPE).write_text(yaml.safe_dump(recipe, sort_keys=False))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(tmp / TOKENIZER))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def export_untrained(out: str | Path, builder_args: dict | None = None,
                     builder: str = "glus.model.build.tiny.TinyGLUSBuilder") -> Path:
    """An export of a freshly initialised model (benchmarks, tests): the same files a trained run writes, so
    everything downstream (predict, evaluate, bench) runs the path a user's export takes."""
    spec = {"class_path": builder, "init_args": dict(builder_args or {})}
    model, tokenizer = instantiate(spec).build()
    recipe = {"model": {"class_path": "glus.train.module.GLUSModule", "init_args": {"builder": spec}}}
    return export_model(model, tokenizer, out, recipe)
