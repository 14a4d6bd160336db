"""What the figure scripts share: a tiny random-weight GLUS export and the frame size of the memory videos."""
from __future__ import annotations

from pathlib import Path

LONG_SIZE = (480, 272)  # frames of the memory videos (W, H): big enough that holding a whole video would show


def tiny_export(folder: Path) -> Path:
    """A random-weight GLUS export at the synthetic recipe's sizes, written once into `folder`."""
    from glus.model.weights.export import export_untrained

    if not (folder / "heads.safetensors").exists():
        export_untrained(folder, {"seed": 0, "clip_image_size": 112, "sam_image_size": 128})
    return folder
