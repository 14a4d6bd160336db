"""Small datasets written in each benchmark's real layout, for the reader tests."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

H, W = 12, 16


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def write_frames(folder: Path, names, h=H, w=W, ext=".jpg") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.fromarray(np.full((h, w, 3), 10 * i, np.uint8)).save(folder / f"{name}{ext}")


def rle(mask: np.ndarray) -> dict:
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in r["size"]], "counts": r["counts"].decode()}


def box(y0, y1, x0, x1, h=H, w=W) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def write_palette(folder: Path, name: str, label: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    im = Image.frombytes("P", (label.shape[1], label.shape[0]), label.astype(np.uint8).tobytes())
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [128] * (256 * 3 - 12))
    im.save(folder / f"{name}.png")


# Object masks used across formats: two overlapping boxes, the second absent in frame 2.
OBJ_A = [box(2, 8, 2, 8), box(3, 9, 3, 9), box(4, 10, 4, 10)]
OBJ_B = [box(5, 11, 6, 12), box(5, 11, 7, 13), None]
FRAMES = ["00000", "00001", "00002"]


def mevis_layout(root: Path, split="train", with_masks=True, no_target=False) -> Path:
    """ROOT/mevis/<split>/{JPEGImages, meta_expressions.json, mask_dict.json}."""
    folder = root / "mevis" / split
    write_frames(folder / "JPEGImages" / "vidA", FRAMES)
    exps = {"0": {"exp": "the left box", "obj_id": [0], "anno_id": [10]},
            "1": {"exp": "Both boxes.", "obj_id": [0, 1], "anno_id": [10, 11]}}
    if no_target:
        exps["2"] = {"exp": "the purple cat", "obj_id": [], "anno_id": []}
    if not with_masks:
        for e in exps.values():
            e.pop("anno_id")
    write_json(folder / "meta_expressions.json",
               {"videos": {"vidA": {"vid_id": 0, "frames": FRAMES, "expressions": exps}}})
    if with_masks:
        write_json(folder / "mask_dict.json", {"10": [rle(m) for m in OBJ_A],
                                               "11": [None if m is None else rle(m) for m in OBJ_B]})
    return root / "mevis"


def refytvos_layout(root: Path, name="refytvos", with_test=True) -> Path:
    """ROOT/refytvos/{train,valid}/JPEGImages, train/Annotations (palette), meta_expressions/<split>/."""
    ds = root / name
    labels = []
    for a, b in zip(OBJ_A, OBJ_B):
        lab = np.zeros((H, W), np.uint8)
        lab[a] = 1
        if b is not None:
            lab[b] = 2  # object 2 drawn in front
        labels.append(lab)
    names = ["00000", "00005", "00010"]
    meta = {"vidA": {"expressions": {"0": {"exp": "a red thing", "obj_id": "1"},
                                     "1": {"exp": "a green thing", "obj_id": "2"}}, "frames": names}}
    for split in ("train", "valid"):
        write_frames(ds / split / "JPEGImages" / "vidA", names)
        for n, lab in zip(names, labels):
            write_palette(ds / split / "Annotations" / "vidA", n, lab)
    valid = dict(meta)
    if with_test:
        write_frames(ds / "valid" / "JPEGImages" / "vidT", names)
        valid["vidT"] = {"expressions": {"0": {"exp": "test only", "obj_id": "1"}}, "frames": names}
        write_json(ds / "meta_expressions" / "test" / "meta_expressions.json", {"videos": {"vidT": valid["vidT"]}})
    write_json(ds / "meta_expressions" / "train" / "meta_expressions.json", {"videos": meta})
    write_json(ds / "meta_expressions" / "valid" / "meta_expressions.json", {"videos": valid})
    return ds


def revos_layout(root: Path) -> Path:
    """ROOT/revos/{JPEGImages/<src>/<vid>, mask_dict.json, mask_dict_foreground.json, meta_expressions_*_.json}."""
    ds = root / "revos"
    vid = "MOSE/vidA"  # ReVOS video ids name their source folder
    write_frames(ds / "JPEGImages" / vid, FRAMES)
    exps = {"0": {"exp": "the left box", "obj_id": [0], "anno_id": [10], "type_id": 0},
            "1": {"exp": "what could be thrown?", "obj_id": [1], "anno_id": [11], "type_id": 1},
            "2": {"exp": "an excluded one", "obj_id": [1], "anno_id": [11], "type_id": 2}}
    for split in ("train", "valid"):
        write_json(ds / f"meta_expressions_{split}_.json", {"videos": {vid: {"frames": FRAMES, "expressions": exps}}})
    write_json(ds / "mask_dict.json", {"10": [rle(m) for m in OBJ_A],
                                       "11": [None if m is None else rle(m) for m in OBJ_B]})
    fg = [rle(box(0, 12, 0, 10)) for _ in FRAMES]
    write_json(ds / "mask_dict_foreground.json", {vid: {"masks_rle": fg, "foreground_ratio": [0.5] * 3}})
    return ds


def reasonvos_layout(root: Path) -> Path:
    """ROOT/reasonvos/{JPEGImages/<vid>, Annotations/<source>_<vid>_<obj>/<frame>.png, meta_expressions.json}."""
    ds = root / "reasonvos"
    write_frames(ds / "JPEGImages" / "vidA", FRAMES)
    ann = ds / "Annotations" / "mose_vidA_1"
    ann.mkdir(parents=True)
    for i in (0, 2):  # frame 1 has no ground truth: only annotated frames are scored
        Image.fromarray(OBJ_A[i].astype(np.uint8) * 255).save(ann / f"{FRAMES[i]}.png")
    exps = [{"obj_id": 1, "exp_id": "0", "exp_text": "the thing a child would pick", "is_sent": 1}]
    write_json(ds / "meta_expressions.json",
               {"videos": {"vidA": {"source": "MOSE", "frames": FRAMES, "expressions": exps}}})
    return ds
