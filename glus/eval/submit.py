"""`glus submit`: zip a prediction folder in a benchmark server's layout, after checking it is complete.

- MeViS (valid) and others: `<video>/<exp_id>/<frame>.png` at the zip root;
- Ref-YouTube-VOS: `Annotations/<video>/<exp_id>/<frame>.png`.
Every video, expression and listed frame must be there, decode, have the frame's size and hold only 0/255
(the servers read 8-bit 0/255 masks). Any problem refuses the whole zip with the list of problems. Names from
the metadata go through `safe_join`, so a crafted name can neither read nor write outside the folders.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from glus.data.index import SplitIndex
from glus.errors import GlusError
from glus.eval.evaluate import open_mask_png, require_prediction_dir
from glus.infer.paths import safe_join
from glus.io import atomic_path

ZIP_PREFIX = {"refytvos": "Annotations"}


class SubmissionError(GlusError, RuntimeError):
    pass


def _check_png(path: Path, height: int, width: int) -> str | None:
    opened = open_mask_png(path, height, width)
    if isinstance(opened, str):
        return opened
    mode, arr = opened
    if mode not in ("L", "P", "1"):
        return f"mode {mode}: expected an 8-bit single-channel PNG"
    if mode == "L" and not np.isin(np.unique(arr), (0, 255)).all():
        return f"values {np.unique(arr)[:6].tolist()}: the server expects 0/255"
    return None


def submission_files(pred_root: str | Path, index: SplitIndex) -> tuple[list[tuple[Path, str]], list[str]]:
    """(file, name in zip) for every expected PNG, and the problems found."""
    prefix = ZIP_PREFIX.get(index.name.split("/")[0])
    files, problems = [], []
    for e in index.expressions:
        video = index.videos[e.video]
        try:
            folder = safe_join(pred_root, e.pred_dir, "prediction folder")
        except ValueError as err:
            problems.append(f"{e.video}/{e.exp_id}: {err}")
            continue
        if not folder.is_dir():
            problems.append(f"{folder}: no prediction folder for expression {e.exp_id} of {e.video}")
            continue
        for frame in video.frames:
            try:
                path = safe_join(folder, f"{frame}.png", "frame name")
            except ValueError as err:
                problems.append(f"{e.video}: {err}")
                continue
            reason = _check_png(path, video.height, video.width)
            if reason:
                problems.append(f"{path}: {reason}")
            else:
                arcname = "/".join(p for p in (prefix, e.pred_dir, f"{frame}.png") if p)
                files.append((path, arcname))
    return files, problems


def write_submission(pred_root: str | Path, index: SplitIndex, out_zip: str | Path) -> dict:
    require_prediction_dir(pred_root)
    files, problems = submission_files(pred_root, index)
    if problems:
        shown = "\n  ".join(problems[:30]) + (f"\n  ... and {len(problems) - 30} more" if len(problems) > 30 else "")
        raise SubmissionError(f"refusing to write {out_zip}: {len(problems)} problem(s) in {pred_root}:\n  {shown}\n"
                              "fix: run `glus predict` again (it resumes and fills what is missing)")
    # PNGs are already compressed: store them (deflate would cost minutes on large splits for ~nothing)
    with atomic_path(out_zip) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        for path, arcname in files:
            zf.write(path, arcname)
    return {"zip": str(out_zip), "split": index.name, "videos": len(index.videos),
            "expressions": len(index.expressions), "files": len(files)}
