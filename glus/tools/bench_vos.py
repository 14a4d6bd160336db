"""`glus tools bench --vos`: the plain VOS path's figures (part of `make bench`; timings never go in `make test`).

1. Constant memory: `glus vos` streams a long video (default 10,000 frames at 480x272) with each memory, in a
   fresh process per run; host peak memory at 100 frames and at the full length, and the per-frame latency
   over frames 10-100 against the last 100 frames of the long run. Frames are decoded as the pass reaches
   them, so neither figure may grow with the frames read so far.
2. Sparse mode at the tiny shapes on synthetic valid_u: expression-frames per second and J&F of
   `glus predict --mode sparse --every K` for K in {4, 8, 16} against GLUS on every frame. With trained exports
   (runs/synthetic/latest/export and runs/vos_synthetic_gated_linear/latest/export) the J&F figures mean
   something; without them untrained ones are used and only the speeds do.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from glus.tools.tiny import LONG_SIZE, tiny_export

MEMORIES = {
    "gated_linear": {"class_path": "glus.model.memory.gated_linear.GatedLinearMemory",
                     "init_args": {"key_dim": 16, "value_dim": 32}},
    "mca": {"class_path": "glus.model.memory.mca.MCAMemory", "init_args": {"key_dim": 16, "value_dim": 32}},
    "sam2_bank": {"num_memories": 7, "temporal_encoding": True, "no_object_embedding": True, "end_to_end": True,
                  "trainable": True, "encode_conditioned": False},
}
TRAINED_GLUS = Path("runs/synthetic/latest/export")
TRAINED_VOS = Path("runs/vos_synthetic_gated_linear/latest/export")


def vos_export(folder: Path, memory: dict) -> Path:
    """An untrained tiny VOS export (speed and memory do not depend on the weights)."""
    from glus.model.weights.export import export_model
    from glus.model.vos import VOSBuilder

    if not (folder / "heads.safetensors").exists():
        args = {"sam_config": "tiny", "sam_image_size": 128, "memory": memory, "train_image_encoder": True}
        model, _ = VOSBuilder(**args).build()
        recipe = {"model": {"class_path": "glus.train.vos.VOSModule",
                            "init_args": {"builder": {"class_path": "glus.model.vos.VOSBuilder", "init_args": args}}}}
        export_model(model, None, folder, recipe)
    return folder


def write_long_video(folder: Path, frames: int) -> tuple[Path, Path]:
    """(frames folder, palette mask of frame 0): two discs moving on a noisy background, written one frame at
    a time (the writer never holds the video either)."""
    done = folder / "_complete"
    frames_dir, mask = folder / "frames", folder / "mask.png"
    if done.exists():
        return frames_dir, mask
    frames_dir.mkdir(parents=True, exist_ok=True)
    w, h = LONG_SIZE
    rng = np.random.default_rng(0)
    background = rng.integers(40, 90, (h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    for t in range(frames):
        img = background.copy()
        labels = np.zeros((h, w), np.uint8)
        for k, (colour, speed, radius) in enumerate((((220, 40, 40), 0.013, 30), ((40, 200, 60), 0.021, 22))):
            cx = w / 2 + (w / 3) * np.sin(speed * t + k)
            cy = h / 2 + (h / 4) * np.cos(speed * 1.3 * t + 2 * k)
            disc = (xx - cx) ** 2 + (yy - cy) ** 2 < radius ** 2
            img[disc] = colour
            labels[disc] = k + 1
        Image.fromarray(img).save(frames_dir / f"{t:05d}.jpg", quality=90)
        if t == 0:
            im = Image.fromarray(labels, mode="P")
            im.putpalette([0, 0, 0, 220, 40, 40, 40, 200, 60] + [0] * (3 * 253))
            im.save(mask)
    done.touch()
    return frames_dir, mask


_CHILD = """
import json, resource, sys, time, torch
import glus.infer.vos_job as job
from glus.model.weights.load import load_model
export, frames, mask, out, limit = sys.argv[1:6]
times, reads, writes = [], [], []
real_read, real_write = job.read_frame, job.write_png
def timed(path):
    times.append(time.perf_counter())
    out = real_read(path)
    reads.append(time.perf_counter() - times[-1])
    return out
def timed_write(*args):
    start = time.perf_counter()
    real_write(*args)
    writes.append(time.perf_counter() - start)
job.read_frame, job.write_png = timed, timed_write
listed = job.list_frames(frames)[: int(limit)]
job.list_frames = lambda folder: listed
torch.set_num_threads(1)
model, _, _ = load_model(export)
job.run_vos_job(model, export, frames, mask, out, snapshot_every=0, progress=False)
gaps = [b - a for a, b in zip(times[1:], times[2:])]  # times[0]: the size check of the first frame
# a frame's gap = its read + the model + its PNG write; PNG time depends on the masks (an untrained model's
# masks change character over a long video), so the model's own time is reported too
compute = [g - r - w for g, r, w in zip(gaps, reads[1:], writes)]
mean = lambda xs: 1000 * sum(xs) / len(xs)
print("BENCH " + json.dumps({"host_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
      "gpu_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
      "ms_frames_10_100": mean(gaps[9:99]), "ms_last_100": mean(gaps[-100:]),
      "ms_model_10_100": mean(compute[9:99]), "ms_model_last_100": mean(compute[-100:]), "frames": len(listed)}))
"""


def stream(export: Path, frames: Path, mask: Path, out: Path, limit: int) -> dict:
    import shutil

    shutil.rmtree(out, ignore_errors=True)  # a full run, not a resumed one
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(export), str(frames), str(mask), str(out), str(limit)],
                          capture_output=True, text=True, check=False)
    line = [x for x in proc.stdout.splitlines() if x.startswith("BENCH ")]
    if proc.returncode or not line:
        raise RuntimeError(f"the VOS memory bench failed:\n{proc.stderr[-3000:]}")
    shutil.rmtree(out, ignore_errors=True)
    return {**json.loads(line[-1][6:]), "seconds": time.perf_counter() - start}


def constant_memory(out: Path, long_frames: int, memories=tuple(MEMORIES)) -> dict:
    frames, mask = write_long_video(out / f"vos_long{long_frames}", long_frames)
    report = {}
    for name in memories:
        export = vos_export(out / f"vos-{name}", MEMORIES[name])
        short = stream(export, frames, mask, out / "vos_pred", 100)
        long = stream(export, frames, mask, out / "vos_pred", long_frames)
        report[name] = {"short": short, "long": long,
                        "peak_ratio": long["host_peak_mib"] / short["host_peak_mib"],
                        "latency_ratio": long["ms_last_100"] / long["ms_frames_10_100"],
                        "model_latency_ratio": long["ms_model_last_100"] / long["ms_model_10_100"]}
    return report


def sparse_mode(out: Path, data_root: Path, every=(4, 8, 16)) -> dict:
    """Speed and J&F of sparse mode against GLUS on every frame, on synthetic valid_u."""
    import torch

    from glus.data.cache import load_split
    from glus.eval.evaluate import evaluate
    from glus.infer.predict import predict_split
    from glus.model.weights.load import load_model

    trained = TRAINED_GLUS.is_dir() and TRAINED_VOS.is_dir()
    glus_export = TRAINED_GLUS if trained else tiny_export(out / "tiny-export")
    vos = TRAINED_VOS if trained else vos_export(out / "vos-gated_linear", MEMORIES["gated_linear"])
    model, tokenizer, _ = load_model(glus_export)
    vos_model, _, _ = load_model(vos)
    index = load_split(data_root, "mevis/valid_u")
    frames = sum(len(index.videos[e.video].frames) for e in index.expressions)
    report = {"trained": trained, "glus": str(glus_export), "vos": str(vos), "expression_frames": frames, "runs": {}}
    torch.set_num_threads(1)
    for k in (0, *every):  # 0: GLUS on every frame (the engine)
        pred = out / f"sparse_pred_{k}"
        import shutil
        shutil.rmtree(pred, ignore_errors=True)
        start = time.perf_counter()
        predict_split(model, tokenizer, index, pred, mode="sparse" if k else "engine", vos_model=vos_model,
                      every=k or 8, progress=False)
        seconds = time.perf_counter() - start
        results, _ = evaluate(pred, index, workers=0, progress=False)
        report["runs"][k] = {"seconds": seconds, "expression_frames_per_s": frames / seconds, "jf": results["jf"]}
    base = report["runs"][0]
    for k in every:
        run = report["runs"][k]
        run["speedup"] = base["seconds"] / run["seconds"]
        run["jf_change"] = run["jf"] - base["jf"]
    return report


def print_vos(report: dict) -> None:
    for name, r in report.get("constant_memory", {}).items():
        s, l = r["short"], r["long"]
        print(f"[vos memory] {name}: host peak {s['host_peak_mib']:.0f} MiB at {s['frames']} frames, "
              f"{l['host_peak_mib']:.0f} MiB at {l['frames']} (ratio {r['peak_ratio']:.3f}); per frame "
              f"{l['ms_frames_10_100']:.1f} ms over frames 10-100, {l['ms_last_100']:.1f} ms over the last 100 "
              f"(ratio {r['latency_ratio']:.3f}); the model alone {l['ms_model_10_100']:.1f} and "
              f"{l['ms_model_last_100']:.1f} ms (ratio {r['model_latency_ratio']:.3f})")
    sparse = report.get("sparse")
    if sparse:
        base = sparse["runs"][0]
        print(f"[sparse] synthetic valid_u, {'trained' if sparse['trained'] else 'UNTRAINED (speed only)'} exports: "
              f"GLUS every frame {base['expression_frames_per_s']:.1f} expression-frames/s, J&F {base['jf']:.3f}")
        for k, r in sparse["runs"].items():
            if k:
                print(f"  every {k:2d}: {r['expression_frames_per_s']:.1f} expression-frames/s ({r['speedup']:.2f}x), "
                      f"J&F {r['jf']:.3f} ({r['jf_change']:+.3f})")
