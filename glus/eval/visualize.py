"""`glus visualize`: overlay videos of chosen expressions (prediction in red, ground truth outlined in green)
and, where ground truth exists, a plot of the per-frame IoU."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from glus.data.frames import load_frames
from glus.data.index import SplitIndex
from glus.data.masks import MaskReader
from glus.eval.evaluate import EvaluationError, read_prediction, require_prediction_dir
from glus.eval.metrics import j_per_frame
from glus.eval.overlay import write_overlay
from glus.infer.paths import safe_join


def choose(index: SplitIndex, wanted: list[str] | None, count: int) -> list:
    """Expressions named VIDEO/EXP_ID, or the first `count` of the split."""
    if not wanted:
        return index.expressions[:count]
    by_uid = {f"{e.video}/{e.exp_id}": e for e in index.expressions}
    unknown = [w for w in wanted if w not in by_uid]
    if unknown:
        raise EvaluationError(f"--expressions: unknown expression(s) {unknown} in {index.name}: name them "
                              f"VIDEO/EXP_ID, e.g. {next(iter(by_uid))}")
    return [by_uid[w] for w in wanted]


def plot_iou(path: Path, ious: np.ndarray, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 2.5))
    ax.plot(np.arange(len(ious)), ious, marker=".")
    ax.set(ylim=(0, 1.02), xlabel="frame", ylabel="IoU (J)", title=title[:70])
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def visualize(pred_root: str | Path, index: SplitIndex, out: str | Path, wanted: list[str] | None = None,
              count: int = 4, fmt: str = "mp4", fps: int = 6) -> list[Path]:
    require_prediction_dir(pred_root)
    out, reader, written = Path(out), MaskReader(index), []
    for e in choose(index, wanted, count):
        video = index.videos[e.video]
        folder = safe_join(pred_root, e.pred_dir, "prediction folder")
        preds = [read_prediction(safe_join(folder, f"{f}.png", "frame name"), video.height, video.width)
                 for f in video.frames]
        bad = [f"{f}: {p}" for f, p in zip(video.frames, preds) if isinstance(p, str)]
        if bad:
            raise EvaluationError(f"predictions of {e.video}/{e.exp_id} in {folder} cannot be shown: {bad[:5]}; "
                                  "fix: run `glus predict` again (it resumes and fills what is missing)")
        pred = np.stack(preds)
        # sparse ground truth (ReasonVOS) has no mask on most frames: no outline then
        gt = reader.targets(e, range(len(video.frames))) if e.mask.kind not in ("none", "binary_png") else None
        stem = safe_join(out, e.pred_dir, "output name")
        stem.parent.mkdir(parents=True, exist_ok=True)
        written.append(write_overlay(stem.with_name(stem.name + f".{fmt}"), load_frames(video, range(len(pred))),
                                     pred, gt, caption=e.text, fps=fps))
        if gt is not None:
            written.append(plot_iou(stem.with_name(stem.name + "_iou.png"), j_per_frame(pred, gt),
                                    f"{e.video}/{e.exp_id}: {e.text}"))
    return written
