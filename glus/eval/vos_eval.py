"""J&F of the plain VOS path on a split with ground truth: each object given at its first appearance.

The protocol (Ref-YouTube-VOS style, semi-supervised): an object's ground-truth mask is given on the first
frame where it is visible; the objects that appear on the same frame are propagated together (one joint
batch: they may read each other's masks), forward to the last frame and backward to the first. An
expression's prediction is the union of its objects' masks, scored with the benchmark's J and F, so the
figures sit beside GLUS' on the same expressions (and per kind on the synthetic data).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from glus.data.frames import load_frames
from glus.data.index import NONE, SplitIndex
from glus.data.masks import MaskReader
from glus.data.vos_clips import video_objects
from glus.eval.metrics import ExpressionScore, aggregate_mean, by_kind, score_expression
from glus.infer.vos import propagate


def first_appearances(gt_OTHW: np.ndarray) -> list[int | None]:
    """Per object, the first frame where it is visible (None: never)."""
    out = []
    for masks in gt_OTHW:
        visible = np.flatnonzero(masks.reshape(len(masks), -1).any(1))
        out.append(int(visible[0]) if len(visible) else None)
    return out


def predict_objects(model, frames_THWC: np.ndarray, gt_OTHW: np.ndarray) -> np.ndarray:
    """bool (O, T, H, W): each object's masks, given at its first appearance."""
    pred = np.zeros_like(gt_OTHW, dtype=bool)
    starts = first_appearances(gt_OTHW)
    for s in sorted({s for s in starts if s is not None}):
        members = [o for o, start in enumerate(starts) if start == s]
        given = torch.from_numpy(gt_OTHW[members, s])
        for t, logits in propagate(model, lambda i: frames_THWC[i], given, s, len(frames_THWC)):
            best, idx = logits.max(0)  # the objects of one pass do not overlap, as in a palette PNG
            for k, o in enumerate(members):
                pred[o, t] = ((idx == k) & (best > 0)).numpy()
    return pred


def window_scores(video: str, exp_id: str, pred_THW: np.ndarray, gt_THW: np.ndarray,
                  window: int) -> tuple[ExpressionScore, ExpressionScore]:
    """(J&F over the `window` frames from the first where the ground truth is visible (frame 0 if never), J&F
    over the last `window` frames): a tracker that drifts scores lower in the second."""
    start = first_appearances(gt_THW[None])[0] or 0
    return (score_expression(video, exp_id, pred_THW[start:start + window], gt_THW[start:start + window]),
            score_expression(video, exp_id, pred_THW[-window:], gt_THW[-window:]))


def evaluate_vos(model, root: str | Path, split: str, max_videos: int | None = None,
                 progress: bool = True, windows: int | None = None) -> dict:
    """J&F of first-appearance propagation, overall and per kind. windows=W: also J&F over each expression's
    first W frames from its first appearance ("first_W") and over the video's last W frames ("last_W"), so that
    drift on long videos shows (`glus data synth --frames 300`)."""
    from glus.data.cache import load_split

    index: SplitIndex = load_split(str(root), split)
    reader = MaskReader(index)
    groups = index.by_video()
    videos = sorted(v for v, exprs in groups.items() if any(e.mask.kind != NONE for e in exprs))[:max_videos]
    scores: list[ExpressionScore] = []
    early: list[ExpressionScore] = []
    late: list[ExpressionScore] = []
    for vid in tqdm(videos, desc=f"VOS {split}", disable=not progress):
        video = index.videos[vid]
        n = len(video.frames)
        objects = video_objects(groups[vid])
        gt = np.stack([np.stack([reader.object_mask(e, o, t) for t in range(n)]) for e, o in objects])
        pred = predict_objects(model, load_frames(video, range(n)), gt)
        column = {str(o): k for k, (_, o) in enumerate(objects)}
        for e in groups[vid]:
            if e.mask.kind == NONE:
                continue
            mine = [column[str(o)] for o in e.mask.ids]
            union = pred[mine].any(0) if mine else np.zeros((n, video.height, video.width), bool)
            gt_e = reader.targets(e, range(n))
            scores.append(score_expression(vid, e.exp_id, union, gt_e))
            if windows:
                first, last = window_scores(vid, e.exp_id, union, gt_e, windows)
                early.append(first)
                late.append(last)
    result = {**aggregate_mean(scores), "split": split, "protocol": "first-appearance propagation"}
    if windows:
        result[f"first_{windows}"], result[f"last_{windows}"] = aggregate_mean(early), aggregate_mean(late)
    kinds = index.kinds()
    if kinds:
        result["by_kind"] = by_kind(scores, kinds)
    result["scores"] = scores
    return result


def write_vos_results(run_dir: str | Path, result: dict) -> None:
    from glus.eval.evaluate import write_scores_csv
    from glus.io import atomic_write_json

    run_dir = Path(run_dir)
    scores = result.get("scores", [])
    atomic_write_json(run_dir / "vos_metrics.json", {k: v for k, v in result.items() if k != "scores"})
    write_scores_csv(run_dir / "vos_per_expression.csv", scores)


def format_vos_table(results: dict[str, dict], control: str | None = None) -> str:
    """Markdown: one row per model (J&F overall and per kind), its gain over the `control` row if given, and the
    drift on long videos where a run has it ("long": the first and the last W frames' J&F)."""
    kinds = sorted({k for r in results.values() for k in r.get("by_kind", {})})
    long = next((r["long"] for r in results.values() if "long" in r), None)
    drift = [f"long: first {long['window']}", f"last {long['window']}", "change"] if long else []
    head = ["model", "J&F", "J", "F", *kinds] + (["vs control"] if control else []) + drift
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        cells = [name, f"{r['jf']:.3f}", f"{r['j']:.3f}", f"{r['f']:.3f}"]
        cells += [f"{r['by_kind'][k]['jf']:.3f} ({r['by_kind'][k]['count']})" if k in r.get("by_kind", {}) else "-"
                  for k in kinds]
        if control:
            cells.append(f"{r['jf'] - results[control]['jf']:+.3f}" if control in results else "-")
        if drift:
            d = r.get("long")
            cells += [f"{d['first']:.3f}", f"{d['last']:.3f}", f"{d['last'] - d['first']:+.3f}"] if d else ["-"] * 3
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def long_drift(metrics_file: Path) -> dict | None:
    """{window, first, last} from a `glus vos-eval --windows W` result on long videos, or None without one."""
    if not metrics_file.is_file():
        return None
    r = json.loads(metrics_file.read_text())
    window = next((int(k.split("_")[1]) for k in r if k.startswith("first_")), None)
    return None if window is None else {"window": window, "first": r[f"first_{window}"]["jf"],
                                        "last": r[f"last_{window}"]["jf"]}


def vos_table(runs: dict[str, str | Path], out: str | Path, control: str | None = None) -> str:
    """The table of several trained runs ({name: run folder with vos_metrics.json, and long/vos_metrics.json
    where the run was scored on long videos}), written as OUT.md/.json."""
    from glus.io import atomic_write_json, atomic_write_text

    results = {}
    for name, run in runs.items():
        file = Path(run) / "vos_metrics.json"
        if not file.is_file():
            raise FileNotFoundError(f"{file} not found: the run {name} has not finished (glus fit writes it at the end)")
        results[name] = json.loads(file.read_text())
        drift = long_drift(Path(run) / "long" / "vos_metrics.json")
        if drift:
            results[name]["long"] = drift
    table = format_vos_table(results, control)
    out = Path(out)
    atomic_write_text(out.with_suffix(".md"), table + "\n")
    atomic_write_json(out.with_suffix(".json"), results)
    return table
