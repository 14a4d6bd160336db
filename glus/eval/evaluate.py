"""`glus evaluate`: score a prediction folder against a split's ground truth with the official protocols.

Per frame J and F as DAVIS-2017 (`glus.eval.metrics`), mean over frames per expression, then:
- MeViS, Ref-YouTube-VOS (user-supplied ground truth), Ref-DAVIS, ReasonVOS: mean over expressions;
- ReVOS: J, F, A, R per type (referring, reasoning; type 2 excluded) with per-expression values rounded to
  2 decimals, overall = mean of the two types.
ReasonVOS scores only the frames that carry ground truth.

Where the official MeViS scorer silently drops an expression whose predictions are missing or mis-sized, this
reports every such expression and fails, unless `missing="zero"` scores them J = F (= A = R) = 0.
"""
from __future__ import annotations

import csv
import io
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from rich.progress import track

from glus.data.index import SplitIndex
from glus.data.masks import MaskReader
from glus.errors import GlusError
from glus.eval.metrics import (
    ExpressionScore,
    aggregate_mean,
    aggregate_revos,
    score_expression,
)
from glus.infer.paths import safe_join
from glus.io import atomic_write_json, atomic_write_text

PNG_CONVENTION = ("any non-zero pixel is foreground, in predictions and ground truth (0/1 and 0/255 PNGs score "
                  "the same); A and R are computed on these binary masks")
EXCLUDED_TYPE = 2  # ReVOS: expressions of type 2 are in no aggregate


class EvaluationError(GlusError, RuntimeError):
    pass


@dataclass
class Problem:
    video: str
    exp_id: str
    path: str
    reason: str


@dataclass
class SplitScores:
    scores: list[ExpressionScore] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    zeroed: set = field(default_factory=set)   # (video, exp_id) scored as zero because of a problem


def open_mask_png(path: Path, height: int, width: int) -> tuple[str, np.ndarray] | str:
    """(PIL mode, array) of a mask PNG of the frame's size, or the reason it cannot be used (evaluate, submit)."""
    if not path.is_file():
        return "missing"
    try:
        with Image.open(path) as im:
            mode, arr = im.mode, np.asarray(im)
    except Exception as err:  # noqa: BLE001 - any decoding failure is a problem to report, not a crash
        return f"does not decode ({err})"
    if arr.shape[:2] != (height, width):
        return f"size {arr.shape[1]}x{arr.shape[0]}, expected {width}x{height}"
    return mode, arr


def read_prediction(path: Path, height: int, width: int) -> np.ndarray | str:
    """bool (H, W), or the reason the file cannot be scored."""
    opened = open_mask_png(path, height, width)
    if isinstance(opened, str):
        return opened
    arr = opened[1]
    return (arr if arr.ndim == 2 else arr[..., 0]) > 0


def require_prediction_dir(pred_root: str | Path) -> Path:
    """The folder `glus predict` wrote, checked before anything is scored, zipped or drawn."""
    pred_root = Path(pred_root)
    if not pred_root.is_dir():
        raise EvaluationError(f"prediction folder {pred_root} not found: pass --pred the --out folder of "
                              f"`glus predict`, or run `glus predict ... --out {pred_root}` first")
    return pred_root


def scored_expressions(index: SplitIndex) -> list:
    out = [e for e in index.expressions if e.mask.kind != "none" and e.type_id != EXCLUDED_TYPE]
    if not out:
        raise EvaluationError(f"{index.name} has no ground truth to score: it is a server split, use `glus submit`")
    return out


_JOB: dict = {}  # the split being scored, set once per worker process (not pickled with every video)


def _init_job(index: SplitIndex, pred_root: Path, with_ar: bool) -> None:
    _JOB.update(index=index, pred_root=pred_root, with_ar=with_ar, reader=MaskReader(index))


def _score_video(exprs: list) -> tuple[list[ExpressionScore], list[Problem], list[tuple]]:
    index, pred_root, with_ar, reader = _JOB["index"], _JOB["pred_root"], _JOB["with_ar"], _JOB["reader"]
    scores, problems, zeroed = [], [], []
    for e in exprs:
        video = index.videos[e.video]
        frames = reader.annotated_frames(e)
        folder = safe_join(pred_root, e.pred_dir, "prediction folder")
        preds, bad = [], []
        for t in frames:
            path = safe_join(folder, f"{video.frames[t]}.png", "frame name")
            pred = read_prediction(path, video.height, video.width)
            (bad.append(Problem(e.video, e.exp_id, str(path), pred))
             if isinstance(pred, str) else preds.append(pred))
        if bad:
            problems += bad
            zero = 0.0 if with_ar else None
            scores.append(ExpressionScore(e.video, e.exp_id, 0.0, 0.0, zero, zero, e.type_id, len(frames)))
            zeroed.append((e.video, e.exp_id))
            continue
        gt = reader.targets(e, frames)
        fg = np.stack([reader.foreground(e.video, t) for t in frames]) if with_ar else None
        scores.append(score_expression(e.video, e.exp_id, np.stack(preds), gt, fg, e.type_id))
    return scores, problems, zeroed


def score_split(pred_root: str | Path, index: SplitIndex, workers: int = 0, progress: bool = True) -> SplitScores:
    """Score every expression with ground truth; problems are collected, never raised here."""
    with_ar = index.name.startswith("revos/")
    groups: dict[str, list] = {}
    for e in scored_expressions(index):
        groups.setdefault(e.video, []).append(e)
    jobs, result = list(groups.values()), SplitScores()
    if workers <= 1:
        _init_job(index, Path(pred_root), with_ar)
        _collect(result, map(_score_video, jobs), len(jobs), progress)
        return result
    with ProcessPoolExecutor(workers, initializer=_init_job, initargs=(index, Path(pred_root), with_ar)) as pool:
        _collect(result, pool.map(_score_video, jobs, chunksize=4), len(jobs), progress)
    return result


def _collect(result: SplitScores, per_video, total: int, progress: bool) -> None:
    for scores, problems, zeroed in track(per_video, total=total, description="scoring videos", disable=not progress):
        result.scores += scores
        result.problems += problems
        result.zeroed.update(zeroed)


def missing_folders(pred_root: str | Path, index: SplitIndex) -> list[str]:
    """Expressions without a prediction folder at all: a cheap check before any decoding."""
    expressions = scored_expressions(index)  # a server split is the first thing to report, whatever the folder
    require_prediction_dir(pred_root)
    return [e.pred_dir for e in expressions if not safe_join(pred_root, e.pred_dir, "prediction folder").is_dir()]


def evaluate(pred_root: str | Path, index: SplitIndex, missing: str = "fail", workers: int = 0,
             progress: bool = True) -> tuple[dict, SplitScores]:
    if missing not in ("fail", "zero"):
        raise ValueError(f"missing must be 'fail' or 'zero', got {missing!r}")
    absent = missing_folders(pred_root, index)
    if absent and missing == "fail":
        raise EvaluationError(_problem_text(len(absent), [f"{p}/ (no folder)" for p in absent], pred_root))
    scored = score_split(pred_root, index, workers, progress)
    if scored.problems and missing == "fail":
        lines = [f"{p.path}: {p.reason}" for p in scored.problems]
        raise EvaluationError(_problem_text(len(scored.zeroed), lines, pred_root))
    ordered = sorted(scored.scores, key=lambda s: (s.video, s.exp_id))
    scored.scores = ordered
    table = aggregate_revos(ordered) if index.name.startswith("revos/") else aggregate_mean(ordered)
    results = {**table, "split": index.name, "pred": str(pred_root), "png_convention": PNG_CONVENTION,
               "problems": {"policy": missing, "expressions_scored_zero": len(scored.zeroed),
                            "list": sorted(f"{v}/{e}" for v, e in scored.zeroed)}}
    return results, scored


def _problem_text(n: int, lines: list[str], pred_root) -> str:
    shown = "\n  ".join(lines[:30]) + (f"\n  ... and {len(lines) - 30} more" if len(lines) > 30 else "")
    return (f"{n} expression(s) cannot be scored from {pred_root} (the official MeViS scorer would drop them "
            f"silently):\n  {shown}\nfix: predict them again (`glus predict` resumes), or pass --missing zero "
            "to score them as 0")


def write_scores_csv(path: str | Path, scores: list[ExpressionScore], zeroed: set = frozenset()) -> Path:
    """One row per expression (evaluation and training's final evaluation write the same columns)."""
    def num(x):
        return "" if x is None else f"{x:.6f}"

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["video", "exp_id", "type_id", "frames", "j", "f", "jf", "a", "r", "scored_zero"])
    for s in scores:
        w.writerow([s.video, s.exp_id, "" if s.type_id is None else s.type_id, s.frames, num(s.j), num(s.f),
                    num(s.jf), num(s.a), num(s.r), int((s.video, s.exp_id) in zeroed)])
    return atomic_write_text(path, buf.getvalue())


def write_results(results: dict, scored: SplitScores, out_json: str | Path) -> tuple[Path, Path]:
    """OUT_JSON and, beside it, the per-expression CSV."""
    out_json = atomic_write_json(out_json, results)
    return out_json, write_scores_csv(out_json.with_suffix(".csv"), scored.scores, scored.zeroed)


def print_table(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    keys = [k for k in ("j", "f", "jf", "a", "r") if k in results]
    table = Table(title=f"{results['split']}: {results['pred']}")
    table.add_column("")
    for k in keys:
        table.add_column({"jf": "J&F"}.get(k, k.upper()), justify="right")
    table.add_column("expressions", justify="right")
    rows = [("overall", results)] + [(k, results[k]) for k in ("referring", "reasoning") if k in results]
    for name, row in rows:
        table.add_row(name, *[f"{100 * row[k]:.2f}" for k in keys], str(row["count"]))
    Console().print(table)
    zero = results["problems"]["expressions_scored_zero"]
    if zero:
        Console().print(f"[yellow]{zero} expression(s) had missing or mis-sized predictions and were scored as 0")
    Console().print(f"PNG convention: {PNG_CONVENTION}")
