"""`glus study keyframes-report`: what key frames buy, on a split with ground truth.

For one GLUS export and one selector's key-frame file (`glus keyframes`), on the same split:
1. true per-frame IoU: the pseudo-label job over the whole split (GLUS from the first frame, the published pass);
2. four key frames per expression: the first frame (the published default), the selector's, the oracle's (the
   frame with the best true IoU, the earliest on a tie), and the oracle's among the frames where the target is
   present. The published label scores a frame where the target is absent and the prediction empty as IoU 1,
   so the plain oracle (and a selector trained on that label) may start from a frame without the target;
   the fourth row shows what that costs; and a control: the first frame with the model's memory switched off
   (`NoMemory`): where it scores like the first-frame row, the memory carries nothing from frame to frame,
   and no choice of start frame can matter;
3. GLUS predictions from each (forward and backward from the key frame), scored with `glus evaluate`'s code:
   J&F overall and per kind of expression (synthetic data);
4. the selector against the truth: Spearman correlation of its scores with the true per-frame IoU (per
   expression, then averaged; expressions whose IoU is the same on every frame have no ranking and are left
   out, and counted), and its hit rate: the chosen frame's true IoU within 0.05 of the best frame's.
Besides the table (keyframes_table.md and .json), OUT/rows/NAME.json holds each row in the shape of the
metrics.json glus fit writes, so that `glus study ablation-table` reads it as a row's source (`make ablate`, row 5).
Every step writes into OUT and is resumable (the jobs skip what is done), so a rerun only finishes what is missing.
"""
from __future__ import annotations

import shutil
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pandas as pd

from glus.data.index import SplitIndex
from glus.eval.evaluate import evaluate
from glus.eval.metrics import by_kind
from glus.train.pseudolabel import pseudolabel_split, read_pseudolabels
from glus.errors import GlusError
from glus.infer.jobs import SETTINGS, JobSettingsError, read_job
from glus.infer.keyframe_job import key_frames, scores_dir
from glus.infer.keyframes import read_keyframes, write_keyframes
from glus.infer.predict import predict_split
from glus.model.memory import memory_off
from glus.io import atomic_write_json, atomic_write_text

HIT_TOLERANCE = 0.05
STARTS = ("first", "selector", "oracle", "oracle_present")
NO_MEMORY = "first_no_memory"  # the control: if it scores like "first", the memory carries nothing between frames


def spearman(a: pd.Series, b: pd.Series) -> float:
    """Spearman's rho: Pearson's correlation of the average ranks (ties share their mean rank). By hand, since
    pandas' method="spearman" needs scipy, which nothing else here does."""
    return float(a.rank().corr(b.rank()))


def selector_quality(scores: pd.DataFrame, truth: pd.DataFrame, chosen: dict[str, int]) -> dict:
    """Spearman of scores with true IoU (mean over expressions with a ranking), and the hit rate."""
    both = truth.merge(scores, on=["video", "exp_id", "frame_index"], how="inner")
    if len(both) != len(truth):
        raise ValueError(f"the selector scored {len(both)} of the {len(truth)} labelled frames: the key-frame file "
                         "and the labels must be for the same split")
    rhos, hits, first, random = [], [], [], []
    for (video, exp_id), group in both.groupby(["video", "exp_id"], sort=True):
        iou = group.set_index("frame_index")["iou"]
        if iou.nunique() > 1 and group["score"].nunique() > 1:
            rhos.append(spearman(group["iou"], group["score"]))
        good = iou >= iou.max() - HIT_TOLERANCE
        hits.append(bool(good[chosen[f"{video}/{exp_id}"]]))
        first.append(bool(good[iou.index.min()]))  # the published default, for reference
        random.append(float(good.mean()))           # a frame drawn at random, in expectation
    pooled = spearman(both["iou"], both["score"])
    return {"spearman": float(np.mean(rhos)) if rhos else float("nan"), "spearman_expressions": len(rhos),
            "spearman_pooled": pooled, "hit_rate": float(np.mean(hits)), "hit_rate_first_frame": float(np.mean(first)),
            "hit_rate_random_frame": float(np.mean(random)), "expressions": len(hits),
            "hit_tolerance": HIT_TOLERANCE}


def keyframe_report(glus_model, tokenizer, index: SplitIndex, *, glus_ckpt: str, selector_file: str | Path,
                    out: str | Path, num_context: int = 4, mode: str = "engine", progress: bool = True) -> dict:
    out = Path(out)
    if not (scores_dir(selector_file) / SETTINGS).is_file():  # before any long step
        raise GlusError(f"{scores_dir(selector_file)} not found: the report correlates the selector's per-frame "
                        f"scores with the truth, and {selector_file} alone has none. Fix: pass a file written by "
                        "`glus keyframes --out FILE` (its scores are kept in FILE.scores/)")
    labels_dir = out / "labels"
    pseudolabel_split(glus_model, tokenizer, index, labels_dir, ckpt=glus_ckpt, fraction=1.0, seed=0, mode=mode,
                      num_context=num_context, progress=progress)
    truth = read_pseudolabels(labels_dir).to_pandas()
    scored = SplitIndex(index.name, index.root, index.videos, [e for e in index.expressions if e.mask.kind != "none"],
                        index.extras)
    oracle = write_keyframes(out / "oracle_keyframes.json", scored, key_frames(truth, "iou"))
    present = write_keyframes(out / "oracle_present_keyframes.json", scored, key_frames(
        truth.assign(iou=truth["iou"].where(truth["present"], -1.0)), "iou"))  # absent frames rank last
    starts = {"first": read_keyframes("first", scored), "selector": read_keyframes(selector_file, scored),
              "oracle": read_keyframes(oracle, scored), "oracle_present": read_keyframes(present, scored)}
    kinds = index.kinds()
    rows = {}
    for name in (*STARTS, NO_MEMORY):
        pred, kf = out / f"pred_{name}", starts.get(name, starts["first"])
        with memory_off(glus_model) if name == NO_MEMORY else nullcontext():
            predict_fresh(glus_model, tokenizer, scored, pred, mode=mode, num_context=num_context, keyframes=kf,
                          progress=progress)
        results, split_scores = evaluate(pred, scored, progress=False)
        kind_figures = by_kind(split_scores.scores, kinds)
        rows[name] = {"j": results["j"], "f": results["f"], "jf": results["jf"], "count": results["count"],
                      "started_mid_video": sum(1 for s in kf.starts.values() if s > 0),
                      "by_kind": {k: v["jf"] for k, v in kind_figures.items()}}
        # each row also alone, in the shape of glus fit's metrics.json: a source for `glus study ablation-table`
        atomic_write_json(out / "rows" / f"{name}.json", {**rows[name], "by_kind": kind_figures,
                                                          "split": index.name, "key_frame": name, "mode": mode})
    selector_scores = read_job(scores_dir(selector_file)).to_pandas()
    chosen = starts["selector"].starts
    report = {"split": index.name, "glus": str(glus_ckpt), "selector_keyframes": str(selector_file),
              "rows": rows, "selector": selector_quality(selector_scores, truth, chosen)}
    atomic_write_json(out / "keyframes_table.json", report)
    atomic_write_text(out / "keyframes_table.md", format_table(report))
    return report


def predict_fresh(model, tokenizer, index: SplitIndex, pred: Path, **kwargs) -> None:
    """`predict_split`, resuming only what was made with the same settings (predict's own record refuses other
    ones): a folder made from other key frames (a retrained selector) is emptied and predicted again, so a rerun
    never keeps masks from other start frames. (A retrained GLUS is caught earlier: the labels job refuses an
    export whose hash differs.)"""
    try:
        predict_split(model, tokenizer, index, pred, **kwargs)
    except JobSettingsError:
        print(f"{pred}: made from other key frames; predicting again")
        shutil.rmtree(pred)
        predict_split(model, tokenizer, index, pred, **kwargs)


def format_table(report: dict) -> str:
    rows = report["rows"]
    kinds = sorted({k for r in rows.values() for k in r["by_kind"]})
    head = "| key frame | J&F | J | F | " + " | ".join(kinds) + " | started after frame 0 |"
    lines = [f"Key frames on {report['split']} (GLUS {report['glus']})", "", head,
             "|" + "---|" * (5 + len(kinds))]
    for name, r in rows.items():
        per_kind = " | ".join(f"{r['by_kind'].get(k, float('nan')):.3f}" for k in kinds)
        lines.append(f"| {name} | {r['jf']:.3f} | {r['j']:.3f} | {r['f']:.3f} | {per_kind} | "
                     f"{r['started_mid_video']} of {r['count']} |")
    s = report["selector"]
    lines += ["", f"Selector: Spearman with true per-frame IoU {s['spearman']:.3f} (mean over "
              f"{s['spearman_expressions']} expressions whose IoU varies; pooled over all frames "
              f"{s['spearman_pooled']:.3f}); hit rate {s['hit_rate']:.3f} (chosen frame's IoU within "
              f"{s['hit_tolerance']} of the best, {s['expressions']} expressions; the first frame: "
              f"{s['hit_rate_first_frame']:.3f}, a random frame: {s['hit_rate_random_frame']:.3f})."]
    return "\n".join(lines) + "\n"
