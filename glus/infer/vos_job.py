"""`glus vos`: a folder of frames and a palette mask in, one palette PNG per frame out; streaming, resumable.

Layout of OUT:
- `<frame>.png`: the objects' masks (palette indices of the given mask, 0 background), written atomically;
- `_vos.json`: the job's settings; a rerun with other settings into OUT is refused, naming what differs;
- `.vos/<pass>.pt`: every `snapshot_every` frames, the pass' memory state and the last frame written (atomic);
  `.vos/<pass>.done` once a pass has finished.
A killed job continues from its last snapshot: the state saved is the state the pass had there, so the masks
after it are the ones an uninterrupted run writes, and finished passes are not run again.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from glus.errors import GlusError
from glus.infer.vos import pass_order, run_pass, to_label_map
from glus.io import atomic_path, atomic_write_json

FRAME_EXTS = (".jpg", ".jpeg", ".png")
SETTINGS = "_vos.json"


class VOSJobError(GlusError, ValueError):
    """The frames, the mask or the output folder cannot be used as given."""


def list_frames(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise VOSJobError(f"{folder} is not a folder of frames. Fix: --frames DIR holding one image per frame "
                          f"({', '.join(FRAME_EXTS)}), named in temporal order")
    frames = sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_EXTS)
    if not frames:
        raise VOSJobError(f"{folder}: no frames ({', '.join(FRAME_EXTS)}). Fix: --frames DIR holding one image "
                          "per frame, named in temporal order")
    return frames


def read_frame(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as err:
        raise VOSJobError(f"{path}: the frame does not decode ({err}). Fix: replace or remove the file") from err


def read_mask(path: str | Path, size: tuple[int, int]) -> tuple[np.ndarray, list[int], list[int] | None]:
    """(label map (H, W), object labels, palette or None) of a palette PNG (or a grey one: value = object)."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            palette = im.getpalette() if im.mode == "P" else None
            labels = np.asarray(im if im.mode in ("P", "L") else im.convert("L"))
    except Exception as err:
        raise VOSJobError(f"{path}: the mask does not decode ({err}). Fix: --mask a palette PNG, one colour per "
                          "object, 0 for the background") from err
    if labels.shape != size:
        raise VOSJobError(f"{path}: the mask is {labels.shape[1]}x{labels.shape[0]} but the frames are "
                          f"{size[1]}x{size[0]}. Fix: a mask of the frames' size")
    objects = [int(v) for v in np.unique(labels) if v != 0]
    if not objects:
        raise VOSJobError(f"{path}: the mask holds no object (every pixel is 0). Fix: paint each object with its "
                          "own palette index")
    return labels, objects, palette


def start_frame(frames: list[Path], mask: Path, start: str | None) -> int:
    names = [p.stem for p in frames]
    name = start if start is not None else (mask.stem if mask.stem in names else names[0])
    if name not in names:
        raise VOSJobError(f"--start {name}: no such frame in {frames[0].parent} (it has {names[0]} .. "
                          f"{names[-1]}). Fix: --start the name of the frame the mask belongs to, without extension")
    return names.index(name)


def check_settings(out: Path, settings: dict) -> None:
    file = out / SETTINGS
    if file.is_file():
        before = json.loads(file.read_text())
        differ = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
        if differ:
            raise VOSJobError(f"{out} holds a vos job with other settings ({', '.join(differ)}). Fix: --out an "
                              "empty folder, or rerun with the settings recorded in " + str(file))
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(file, settings)


def write_png(path: Path, labels: np.ndarray, palette: list[int] | None) -> None:
    im = Image.fromarray(labels, mode="P") if palette is not None else Image.fromarray(labels, mode="L")
    if palette is not None:
        im.putpalette(palette)
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")


def run_vos_job(model, ckpt: str, frames_dir: str | Path, mask_png: str | Path, out: str | Path,
                start: str | None = None, snapshot_every: int = 100, progress: bool = True) -> dict:
    frames, out, mask_png = list_frames(frames_dir), Path(out), Path(mask_png)
    first = read_frame(frames[0])
    k = start_frame(frames, mask_png, start)
    labels, objects, palette = read_mask(mask_png, first.shape[:2])
    settings = {"ckpt": str(Path(ckpt).resolve()), "frames": str(Path(frames_dir).resolve()),
                "num_frames": len(frames), "mask_sha256": hashlib.sha256(mask_png.read_bytes()).hexdigest(),
                "start": frames[k].stem, "objects": objects}
    check_settings(out, settings)
    given = torch.from_numpy(np.stack([labels == o for o in objects]))
    lookup = np.asarray([0] + objects, np.uint8)  # label map index -> the mask's palette index

    def reader(i: int) -> np.ndarray:
        pixels = read_frame(frames[i])
        if pixels.shape != first.shape:
            raise VOSJobError(f"{frames[i]} is {pixels.shape[1]}x{pixels.shape[0]}, the first frame "
                              f"{first.shape[1]}x{first.shape[0]}. Fix: frames of one size")
        return pixels

    written = 0
    for reverse in ([False, True] if k > 0 else [False]):
        written += _run_one_pass(model, reader, given, k, len(frames), reverse, out, frames, lookup, palette,
                                 snapshot_every, progress)
    return {"frames": len(frames), "written": written, "start": frames[k].stem, "objects": objects}


def _run_one_pass(model, reader, given, k, n, reverse, out, frames, lookup, palette, every, progress) -> int:
    name = "backward" if reverse else "forward"
    work = out / ".vos"
    work.mkdir(exist_ok=True)
    done, snapshot = work / f"{name}.done", work / f"{name}.pt"
    if done.exists():
        return 0
    resume = None
    if snapshot.is_file():
        saved = torch.load(snapshot, weights_only=False)
        resume = (saved["state"], saved["last"])
    order = pass_order(k, n, reverse)
    done_before = order.index(resume[1]) + 1 if resume else 0
    written = 0
    bar = tqdm(total=len(order) - done_before, desc=f"vos {name}", disable=not progress)
    for position, (t, logits, state) in enumerate(run_pass(model, reader, given, k, n, reverse, resume),
                                                  start=done_before + 1):
        if not (reverse and t == k):  # the start frame's mask is the forward pass'
            write_png(out / f"{frames[t].stem}.png", lookup[to_label_map(logits)], palette)
            written += 1
        bar.update(1)
        if every and position % every == 0:
            with atomic_path(snapshot) as tmp:
                torch.save({"state": state, "last": t}, tmp)
    bar.close()
    done.touch()
    snapshot.unlink(missing_ok=True)
    return written
