"""`make bench` / `glus tools bench`: figures, not tests (timings never go in `make test`). Parts 3 and 4 (the plain
VOS path's constant memory, sparse mode) are in `glus.tools.bench_vos`, part 5 (RDS) in `glus.tools.bench_rds`.

1. Engine vs faithful loop: the same tiny model (random weights, the synthetic recipe's sizes) and the same
   video with all its expressions; expression-frames per second and the ratio.
2. Peak memory of streaming prediction (`glus predict`, the engine) on a 100-frame and a 2000-frame video,
   each in a fresh process: host peak RSS and, on GPU, peak device memory. Streaming means it should not
   grow with the video's length.
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

def speed(export: Path, data_root: Path, device: str = "cpu", repeats: int = 1) -> dict:
    import torch

    from glus.data.cache import load_split
    from glus.infer.engine import FaithfulLoop, StreamingEngine
    from glus.model.weights.load import load_model

    model, tokenizer, _ = load_model(export)
    model = model.to(device)
    index = load_split(data_root, "mevis/valid_u")
    groups = index.by_video()
    vid = max(groups, key=lambda v: len(groups[v]))
    video, texts = index.videos[vid], [e.text for e in groups[vid]]
    out = {"video": vid, "frames": len(video.frames), "expressions": len(texts), "device": device}
    for name, cls in (("engine", StreamingEngine), ("faithful", FaithfulLoop)):
        engine = cls(model, tokenizer)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in engine.run(video, texts):
                pass
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
        out[f"{name}_seconds"] = best
        out[f"{name}_expression_frames_per_s"] = len(texts) * len(video.frames) / best
    out["speedup"] = out["faithful_seconds"] / out["engine_seconds"]
    return out


def write_long_split(root: Path, frames: int, expressions: int = 4) -> Path:
    """A MeViS-layout server split (no masks) holding one synthetic video of `frames` frames."""
    from glus.data.synth.render import render
    from glus.data.synth.scene import make_scene
    from glus.data.synth.video import HEIGHT, WIDTH

    split = root / "mevis" / "valid"
    meta = split / "meta_expressions.json"
    if meta.exists():
        return root
    rng = np.random.default_rng([7, frames])
    rendered, _ = render(make_scene(rng, WIDTH, HEIGHT, frames), rng)
    folder = split / "JPEGImages" / f"long_{frames}"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"{t:05d}" for t in range(frames)]
    for name, frame in zip(names, rendered):
        Image.fromarray(frame).resize(LONG_SIZE).save(folder / f"{name}.jpg", quality=90)
    texts = ["the red circle", "the object moving left", "the blue square", "the object that rises"]
    exps = {str(i): {"exp": texts[i % len(texts)], "obj_id": [0], "anno_id": [i]} for i in range(expressions)}
    meta.write_text(json.dumps({"videos": {f"long_{frames}": {"vid_id": 0, "frames": names, "expressions": exps}}}))
    return root


_CHILD = """
import json, resource, sys, torch
from glus.cli import main
rc = main(sys.argv[1:])
gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
end = int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
print("BENCH " + json.dumps({"rc": rc, "host_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                             "host_end_mib": end, "gpu_peak_mib": gpu}))
"""


def peak_memory(export: Path, root: Path, out: Path) -> dict:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CHILD, "predict", "--ckpt", str(export), "--data", "mevis/valid",
                           "--root", str(root), "--out", str(out), "--quiet"], capture_output=True, text=True, check=False)
    line = [x for x in proc.stdout.splitlines() if x.startswith("BENCH ")]
    if proc.returncode or not line:
        raise RuntimeError(f"the memory bench's predict failed:\n{proc.stderr[-3000:]}")
    return {**json.loads(line[-1][6:]), "seconds": time.perf_counter() - start}


PARTS = ("glus", "vos", "sparse", "rds")


def run_bench(out: str | Path = "runs/bench", long_frames: int = 2000, vos_frames: int = 10000,
              parts=None) -> dict:
    """parts: "glus" (engine speed, streaming memory), "vos" (the plain VOS path's constant memory),
    "sparse" (sparse mode's speed-up and J&F change), "rds" (encoder time and FLOPs per kept-block ratio); see
    glus.tools.bench_vos and glus.tools.bench_rds."""
    from glus.tools import bench_vos

    parts = parts or PARTS
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    synth = out / "synthetic"
    if not (synth / "mevis").exists():
        from glus.data.synth import write_synthetic
        write_synthetic(synth, seed=0, videos=8)
    report = run_glus_bench(out, synth, long_frames) if "glus" in parts else {}
    if "vos" in parts:
        report["constant_memory"] = bench_vos.constant_memory(out, vos_frames)
    if "sparse" in parts:
        report["sparse"] = bench_vos.sparse_mode(out, synth)
    if "rds" in parts:
        from glus.tools import bench_rds

        report["rds"] = {"speed": bench_rds.encoder_speed(), "flops": bench_rds.encoder_flops()}
    (out / "bench.json").write_text(json.dumps(report, indent=2))
    if "glus" in parts:
        _print(report, long_frames)
    bench_vos.print_vos(report)
    if "rds" in parts:
        from glus.tools import bench_rds

        bench_rds.print_rds(report)
    return report


def run_glus_bench(out: Path, synth: Path, long_frames: int) -> dict:
    import shutil

    import torch

    export = tiny_export(out / "tiny-export")
    report = {"speed": {"cpu": speed(export, synth, "cpu", repeats=3)}}
    if torch.cuda.is_available():
        report["speed"]["cuda"] = speed(export, synth, "cuda", repeats=3)
    report["memory"] = {}
    for frames in (100, long_frames):
        root = write_long_split(out / f"long{frames}", frames)
        shutil.rmtree(out / f"pred{frames}", ignore_errors=True)  # measure a full run, not a resumed one
        report["memory"][frames] = peak_memory(export, root, out / f"pred{frames}")
    w, h = LONG_SIZE
    report["memory"]["whole_video_uint8_mib"] = {f: f * w * h * 3 / 2**20 for f in (100, long_frames)}
    return report


def _print(report: dict, long_frames: int) -> None:
    for device, s in report["speed"].items():
        print(f"[speed, {device}] tiny GLUS, video {s['video']}: {s['frames']} frames x {s['expressions']} "
              f"expressions\n  engine   {s['engine_seconds']:7.2f} s  {s['engine_expression_frames_per_s']:8.1f} "
              f"expression-frames/s\n  faithful {s['faithful_seconds']:7.2f} s  "
              f"{s['faithful_expression_frames_per_s']:8.1f} expression-frames/s\n  speedup  {s['speedup']:.1f}x")
    m = report["memory"]
    for frames in (100, long_frames):
        gpu = m[frames]["gpu_peak_mib"]
        print(f"[memory] streaming predict, {frames} frames at {LONG_SIZE[0]}x{LONG_SIZE[1]}, 4 expressions: host peak "
              f"{m[frames]['host_peak_mib']:.0f} MiB, at the end {m[frames]['host_end_mib']:.0f} MiB"
              + (f", GPU peak {gpu:.0f} MiB" if gpu is not None else "")
              + f" ({m[frames]['seconds']:.0f} s; the decoded video alone would be "
              f"{m['whole_video_uint8_mib'][frames]:.0f} MiB)")
    print(f"ratio of peaks {long_frames}/100 frames: "
          f"{m[long_frames]['host_peak_mib'] / m[100]['host_peak_mib']:.2f}")


if __name__ == "__main__":
    run_bench()
