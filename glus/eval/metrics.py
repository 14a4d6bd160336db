"""Per-frame J, F (DAVIS-2017), A and R (ReVOS), and the benchmark aggregations.

Inputs are (T, H, W) or (H, W) arrays; any non-zero value is foreground. Vectorised over frames: boundaries by
array shifts, and one `cv2.dilate` call for all frames of a clip (frames stacked with blank rows between them,
so that a dilation never reaches into the next frame).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

BOUNDARY_TH = 0.008  # DAVIS: boundary tolerance as a fraction of the image diagonal


def _as_frames(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground-truth shape {gt.shape}: "
                         "masks are scored at the original size, never resized")
    if pred.ndim not in (2, 3):
        raise ValueError(f"masks must be (H, W) or (T, H, W), got shape {pred.shape}")
    pred, gt = pred != 0, gt != 0
    return (pred[None], gt[None]) if pred.ndim == 2 else (pred, gt)


def j_per_frame(pred, gt) -> np.ndarray:
    """Region similarity (IoU) per frame; 1 when both masks are empty."""
    p, g = _as_frames(pred, gt)
    inter = (p & g).sum(axis=(1, 2))
    union = (p | g).sum(axis=(1, 2))
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def boundaries(masks_THW: np.ndarray) -> np.ndarray:
    """DAVIS seg2bmap: XOR with the east, south and south-east neighbours; bool (T, H, W)."""
    m = masks_THW.astype(bool)
    e, s, se = np.zeros_like(m), np.zeros_like(m), np.zeros_like(m)
    e[:, :, :-1] = m[:, :, 1:]
    s[:, :-1, :] = m[:, 1:, :]
    se[:, :-1, :-1] = m[:, 1:, 1:]
    b = (m ^ e) | (m ^ s) | (m ^ se)
    b[:, -1, :] = m[:, -1, :] ^ e[:, -1, :]
    b[:, :, -1] = m[:, :, -1] ^ s[:, :, -1]
    b[:, -1, -1] = False
    return b


def disk(radius: int) -> np.ndarray:
    """The structuring element of skimage.morphology.disk: x^2 + y^2 <= r^2."""
    y, x = np.ogrid[-radius:radius + 1, -radius:radius + 1]
    return (x * x + y * y <= radius * radius).astype(np.uint8)


def _dilate_frames(b_THW: np.ndarray, radius: int) -> np.ndarray:
    t, h, w = b_THW.shape
    tall = np.zeros((t, h + radius, w), dtype=np.uint8)
    tall[:, :h] = b_THW
    dilated = cv2.dilate(tall.reshape(t * (h + radius), w), disk(radius))
    return dilated.reshape(t, h + radius, w)[:, :h].astype(bool)


def f_per_frame(pred, gt, bound_th: float = BOUNDARY_TH) -> np.ndarray:
    """Boundary F-measure per frame, exactly as the DAVIS-2017 evaluation."""
    p, g = _as_frames(pred, gt)
    radius = int(bound_th if bound_th >= 1 else np.ceil(bound_th * np.linalg.norm(p.shape[1:])))
    pb, gb = boundaries(p), boundaries(g)
    p_match = (pb & _dilate_frames(gb, radius)).sum(axis=(1, 2))
    g_match = (gb & _dilate_frames(pb, radius)).sum(axis=(1, 2))
    n_p, n_g = pb.sum(axis=(1, 2)), gb.sum(axis=(1, 2))
    # DAVIS' special cases: no predicted boundary -> precision 1; no ground-truth boundary -> recall 1.
    precision = np.where(n_p == 0, 1.0, p_match / np.maximum(n_p, 1))
    recall = np.where(n_g == 0, 1.0, g_match / np.maximum(n_g, 1))
    precision = np.where((n_p > 0) & (n_g == 0), 0.0, precision)
    recall = np.where((n_p == 0) & (n_g > 0), 0.0, recall)
    total = precision + recall
    return np.where(total == 0, 0.0, 2 * precision * recall / np.where(total == 0, 1, total))


def a_per_frame(pred, gt) -> np.ndarray:
    """ReVOS accuracy: fraction of pixels where the binary prediction equals the binary ground truth."""
    p, g = _as_frames(pred, gt)
    return (p == g).mean(axis=(1, 2))


def r_per_frame(pred, gt, foreground) -> np.ndarray:
    """ReVOS robustness: max(1 - false-positive pixels / (foreground pixels + 1e-6), 0), on binary masks."""
    p, g = _as_frames(pred, gt)
    _, fg = _as_frames(pred, foreground)
    false_pos = (p & ~g).sum(axis=(1, 2))
    return np.maximum(1 - false_pos / (fg.sum(axis=(1, 2)) + 1e-6), 0.0)


@dataclass
class ExpressionScore:
    """Per-frame means for one expression."""

    video: str
    exp_id: str
    j: float
    f: float
    a: float | None = None
    r: float | None = None
    type_id: int | None = None
    frames: int = 0

    @property
    def jf(self) -> float:
        return (self.j + self.f) / 2


def score_expression(video, exp_id, pred, gt, foreground=None, type_id=None) -> ExpressionScore:
    j, f = j_per_frame(pred, gt), f_per_frame(pred, gt)
    a = r = None
    if foreground is not None:
        a, r = float(a_per_frame(pred, gt).mean()), float(r_per_frame(pred, gt, foreground).mean())
    return ExpressionScore(video, exp_id, float(j.mean()), float(f.mean()), a, r, type_id, frames=len(j))


def aggregate_mean(scores: list[ExpressionScore]) -> dict:
    """MeViS / Ref-YouTube-VOS / Ref-DAVIS / ReasonVOS: mean over expressions of per-frame means."""
    if not scores:
        raise ValueError("no expression was scored")
    j = float(np.mean([s.j for s in scores]))
    f = float(np.mean([s.f for s in scores]))
    return {"j": j, "f": f, "jf": (j + f) / 2, "count": len(scores)}


def aggregate_revos(scores: list[ExpressionScore]) -> dict:
    """ReVOS: per-expression J, F, A, R rounded to 2 decimals (in percent) before averaging, per type
    (0 referring, 1 reasoning; 2 excluded), and overall = mean of the referring and reasoning means."""
    groups = {}
    for name, type_id in (("referring", 0), ("reasoning", 1)):
        rows = [s for s in scores if s.type_id == type_id]
        if not rows:
            raise ValueError(f"no {name} expression (type_id {type_id}) was scored: ReVOS needs both types")
        if any(s.a is None or s.r is None for s in rows):
            raise ValueError("ReVOS aggregation needs A and R for every expression (foreground masks)")
        means = {k: float(np.mean([round(100 * getattr(s, k), 2) for s in rows])) / 100 for k in "jfar"}
        means["jf"] = (means["j"] + means["f"]) / 2
        means["count"] = len(rows)
        groups[name] = means
    overall = {k: (groups["referring"][k] + groups["reasoning"][k]) / 2 for k in ("j", "f", "a", "r", "jf")}
    overall["count"] = groups["referring"]["count"] + groups["reasoning"]["count"]
    return {**overall, "referring": groups["referring"], "reasoning": groups["reasoning"]}


def by_kind(scores: list[ExpressionScore], kinds: dict[tuple[str, str], str]) -> dict:
    """J&F per kind of expression (the synthetic data's "kind": what tells the object apart)."""
    groups: dict[str, list] = {}
    for s in scores:
        if (s.video, s.exp_id) in kinds:
            groups.setdefault(kinds[(s.video, s.exp_id)], []).append(s)
    return {kind: aggregate_mean(group) for kind, group in sorted(groups.items())}
