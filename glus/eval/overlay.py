"""Overlay videos a person can look at: prediction in red, ground-truth outline in green, per-frame IoU."""
from __future__ import annotations

from pathlib import Path

import cv2
import imageio.v2 as imageio
import numpy as np

from glus.eval.metrics import j_per_frame
from glus.io import atomic_path


def overlay_frames(frames_THWC: np.ndarray, pred_THW: np.ndarray, gt_THW: np.ndarray | None = None,
                   caption: str = "", scale: int = 2) -> list[np.ndarray]:
    out = []
    ious = j_per_frame(pred_THW, gt_THW) if gt_THW is not None else None
    for t, frame in enumerate(frames_THWC):
        img = frame.astype(np.float32)
        img[pred_THW[t]] = 0.45 * img[pred_THW[t]] + 0.55 * np.array([255, 40, 40])
        img = np.ascontiguousarray(img.clip(0, 255).astype(np.uint8))
        if gt_THW is not None:
            contours, _ = cv2.findContours(gt_THW[t].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(img, contours, -1, (40, 255, 40), 1)
        img = cv2.resize(img, (img.shape[1] * scale, img.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
        label = caption if ious is None else f"{caption}  IoU {ious[t]:.2f}"
        cv2.putText(img, label[:60], (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        out.append(img)
    return out


def write_overlay(path: str | Path, frames_THWC, pred_THW, gt_THW=None, caption: str = "", fps: int = 4,
                  scale: int | None = None) -> Path:
    """GIF (or MP4 when the path ends in .mp4) of the overlaid frames; written atomically. Small frames are
    enlarged (x2 below 400 px) so that a person can see them."""
    scale = scale or (2 if max(frames_THWC.shape[1:3]) < 400 else 1)
    path = Path(path)
    images = overlay_frames(frames_THWC, pred_THW, gt_THW, caption, scale)
    with atomic_path(path) as tmp:
        if path.suffix == ".mp4":
            imageio.mimsave(tmp, images, fps=fps)
        else:
            imageio.mimsave(tmp, images, duration=1000 / fps, loop=0)
    return path
