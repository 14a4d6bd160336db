"""The one resolver of LightningCLI's `{class_path, init_args}` form, for what is read back outside LightningCLI:
an export's recipe (`glus.model.weights.load`), a memory setting (`glus.model.memory.build_memory`).

Classes that moved keep loading under their old path: exports written before the move (and the committed stages'
recipes) name them as they were then.
"""
from __future__ import annotations

import importlib

# old class_path -> where the class lives now (issue 36 moved the builders out of glus.model.factory)
MOVED = {
    "glus.model.factory.TinyGLUSBuilder": "glus.model.build.tiny.TinyGLUSBuilder",
    "glus.model.factory.LisaGLUSBuilder": "glus.model.build.published.LisaGLUSBuilder",
    "glus.model.factory.RandomWeightsGLUSBuilder": "glus.model.build.published.RandomWeightsGLUSBuilder",
}


def resolve_class(class_path: str) -> type:
    """The class a class_path names, through MOVED; a clear error when it names nothing."""
    path = MOVED.get(class_path, class_path)
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(f"class_path {class_path!r} names no class ({err}): give a dotted path such as "
                         "glus.model.build.tiny.TinyGLUSBuilder") from err


def instantiate(spec, base: type | None = None):
    """A {class_path, init_args} tree -> objects (nested specs inside init_args too). `base`: the class the
    outermost spec must name a subclass of (checked before anything is built)."""
    if isinstance(spec, dict) and "class_path" in spec:
        cls = resolve_class(spec["class_path"])
        if base is not None and not (isinstance(cls, type) and issubclass(cls, base)):
            raise ValueError(f"class_path {spec['class_path']!r} is not a {base.__module__}.{base.__qualname__}")
        return cls(**{k: instantiate(v) for k, v in (spec.get("init_args") or {}).items()})
    if isinstance(spec, dict):
        return {k: instantiate(v) for k, v in spec.items()}
    return spec
