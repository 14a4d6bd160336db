"""Reading a video's frames: the one frame reader of training, inference, scoring and the figure scripts."""
from __future__ import annotations

import numpy as np
from PIL import Image

from glus.data.errors import DataError


def load_frames(video, frame_ids) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB. A video object with a `read_frame(i)` method (one that draws its frames, e.g.
    `glus.data.generated.GeneratedVideo`) is read through it; others from their frame files."""
    if hasattr(video, "read_frame"):
        return np.stack([video.read_frame(i) for i in frame_ids])
    out = []
    for i in frame_ids:
        path = video.frame_path(i)
        try:
            with Image.open(path) as im:
                out.append(np.asarray(im.convert("RGB")))
        except Exception as err:
            raise DataError(f"frame does not decode ({err})", file=path, video=video.id,
                            frame=video.frames[i]) from err
    return np.stack(out)
