"""The models the cost model counts, on the meta device with their training settings: `model_from_recipe`
(a training recipe's GLUS or VOS model) and `preset_model` (glus-7b, the published GLUS-S, or tiny)."""
from __future__ import annotations

import torch


def model_from_recipe(path: str):
    """(model on the meta device, tokenizer or None, training settings) from a recipe file. LISA-based recipes
    are built with LISA-7B-v1's shapes and no checkpoint (`LisaGLUSBuilder.build_on_meta`), Qwen2.5-VL recipes
    with the shapes of their `size` (`QwenGLUSBuilder.build_on_meta`); other builders
    build as usual (a SAM-2 checkpoint is not read: weights do not change costs), then move to meta."""
    import yaml

    from glus.errors import GlusError
    from glus.model.resolve import instantiate
    from glus.model.vos import VOSBuilder

    recipe = yaml.safe_load(open(path))
    try:
        init = recipe["model"]["init_args"]
        spec = init["builder"]
    except (KeyError, TypeError):
        raise GlusError(f"{path}: no model.init_args.builder: not a training recipe") from None
    builder = instantiate(spec)
    clip = (recipe.get("data") or {}).get("init_args", {}).get("clip") or {}
    train = {"num_context": init.get("num_context", 4), "num_query": init.get("num_query", 4),
             "expressions": clip.get("max_expressions", 3),
             "gradient_checkpointing": bool(init.get("gradient_checkpointing", False)),
             "label_mode": init.get("label_mode", "seg"),
             "num_frames": clip.get("num_frames", 6), "objects": clip.get("max_objects", 3)}
    if hasattr(builder, "build_on_meta"):  # the 7B-class builders (LISA, Qwen2.5-VL): their shapes, no checkpoint
        model, tokenizer = builder.build_on_meta()
        return model, tokenizer, train
    if isinstance(builder, VOSBuilder):
        builder.sam_checkpoint = None
    if not hasattr(builder, "build") or "Selector" in type(builder).__name__:
        raise GlusError(f"{path}: builder {spec.get('class_path')} is not a GLUS or VOS model: "
                        "glus tools model cost counts GLUS and plain VOS recipes")
    model, tokenizer = builder.build()
    return model.to("meta"), tokenizer, train


def preset_model(name: str, memory: dict | None = None):
    """(model on meta, tokenizer or None, training settings) of a preset: glus-7b (the published GLUS-S) or tiny."""
    from glus.model.build.published import glus_7b_on_meta
    from glus.model.build.tiny import tiny_glus

    train = {"num_context": 4, "num_query": 4, "expressions": 3, "gradient_checkpointing": False,
             "label_mode": "seg"}
    if name == "glus-7b":
        train["gradient_checkpointing"] = True
        return glus_7b_on_meta(memory=memory, dtype=torch.bfloat16), None, train
    model, tokenizer = tiny_glus()
    return model.to("meta"), tokenizer, train
