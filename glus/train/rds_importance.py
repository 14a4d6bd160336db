"""`glus rds importance`: I-LoRA's block importance of a plain VOS export's SAM-2 trunk on calibration frames of a
split (`glus.model.segmenter.ilora.block_importance`), written to a JSON file that recipes name
(`segmenter.encoder_lora.importance`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from glus.data.frames import load_frames
from glus.data.index import SplitIndex
from glus.io import atomic_write_json
from glus.model.segmenter.ilora import block_importance


def calibration_frames(index: SplitIndex, count: int) -> list[tuple[object, int]]:
    """`count` (video, frame) pairs spread over the split: videos in id order, frames evenly within each."""
    videos = [index.videos[v] for v in sorted(index.videos)]
    if not videos or count < 1:
        raise ValueError(f"calibration needs at least one frame and one video (split {index.name}, {count} frames)")
    per_video = np.diff(np.linspace(0, count, len(videos) + 1).round().astype(int))
    pairs = []
    for video, n in zip(videos, per_video):
        if n:
            pairs += [(video, int(t)) for t in np.linspace(0, len(video.frames) - 1, n).round().astype(int)]
    return pairs


@torch.no_grad()
def importance_job(model, index: SplitIndex, out: str | Path, frames: int = 64, batch: int = 4,
                   source: str = "") -> dict:
    seg = model.segmenter
    device = next(model.parameters()).device
    pairs = calibration_frames(index, frames)

    def batches():  # each frame resized to the SAM-2 input on its own (frames of a split may differ in size)
        for i in range(0, len(pairs), batch):
            yield torch.cat([seg.preprocess(torch.from_numpy(load_frames(v, [t]))) for v, t in pairs[i:i + batch]]
                            ).to(device, seg.dtype)

    report = block_importance(seg.sam.image_encoder, batches())
    report.update(split=index.name, source=source)
    atomic_write_json(Path(out), report)
    return report

