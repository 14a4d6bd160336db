"""`glus tools gpu-check` / `make gpu-check`: the one prepared check of what only a GPU can show, at the 7B shapes with
random weights (LISA-7B-v1 + SAM-2 Hiera-L at 1024 px; `RandomWeightsGLUSBuilder`), in four parts:

1. train: the GLUS-S recipe's training (`recipes/glus_standard.yaml`: bf16, LoRA, gradient checkpointing,
   its DeepSpeed ZeRO-2 strategy, 4 + 4 frames, micro-batch 2, up to 3 expressions per clip) for a few steps
   on synthetic clips: seconds per step, clips and expressions per second, model FLOPs utilisation (the cost
   model's FLOPs of the clips trained, without the recomputation of checkpointing, over the GPU's dense bf16
   peak), peak device memory;
2. infer: a 32-frame 480p video with 4 expressions through the engine and the faithful loop: expression-frames
   per second of both, the speed-up, and their masks' agreement (IoU of the thresholded low-resolution masks
   per expression-frame; the same weights in both, so only rounding differs);
3. stream: 1,000 frames at 1080p and at 4K through the engine, masks upsampled to the frame as `glus predict`
   writes them: peak device memory after 100 frames and after the last one, and frames per second;
4. compile: the engine with `glus predict --compile` (inductor) on part 2's video: the compiling first pass,
   then its speed against the uncompiled engine and the masks' agreement (last: the compiler may take minutes).
Inference runs as `glus predict --precision auto` does on CUDA: the LM in bf16, SAM-2 in float32 under autocast.

Each part runs in a process of its own (its peak memory is its own, and a part that fails is reported without
losing the others) and writes OUT/part_<name>.json; the parent merges them into OUT/gpu.json and OUT/gpu.md.
The parts are in `glus.tools.gpu_parts`, the table in `glus.tools.gpu_report`; this module runs them.
`--dry` runs the same code at the tiny shapes on the CPU (the synthetic recipe, CPU ZeRO-2, short videos at an
eighth of the sizes, torch.compile's eager backend), which is how the test suite keeps this script from rotting;
its figures mean nothing.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from glus.tools.gpu_parts import BACKBONES, SHAPES, CheckShapes, peak_tflops, run_part
from glus.tools.gpu_report import format_report

PARTS = ("train", "infer", "stream", "compile")  # in order of what matters most


# ---- orchestration --------------------------------------------------------------------------------------

def ensure_data(data_root: Path) -> Path:
    if not (data_root / "mevis" / "train" / "meta_expressions.json").is_file():
        from glus.data.synth import write_synthetic

        write_synthetic(data_root, seed=0, videos=16, progress=False)
    return data_root


def check(out: Path, dry: bool = False, device: str | None = None, data_root: Path | None = None,
          parts=PARTS, timeout: float | None = None, backbone: str = "lisa") -> dict:
    """Run the parts, each in its own process, and write OUT/gpu.json and OUT/gpu.md. backbone: "lisa" (GLUS-S,
    recipes/glus_standard.yaml) or "qwen2.5-vl-7b" (recipes/glus_qwen2_5_vl_7b.yaml)."""
    import torch

    device = device or ("cpu" if dry else "cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("gpu-check: no CUDA device here. Fix: run it on a GPU machine, or `make gpu-check DRY=1` "
                         "(the same script at the tiny shapes on the CPU)")
    out.mkdir(parents=True, exist_ok=True)
    data_root = ensure_data(Path(data_root or out / "data"))
    report = {"shapes": "tiny (dry run: figures mean nothing)" if dry else "7b", "backbone": backbone,
              "device": peak_tflops(device)[0],
              "torch": torch.__version__, "cuda": torch.version.cuda, "parts": {}, "errors": {}}
    for part in parts:
        result = out / f"part_{part}.json"
        result.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "glus.tools.gpu_check", "--part", part, "--out", str(out), "--device", device,
               "--data", str(data_root), "--backbone", backbone] + (["--dry"] if dry else [])
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        print(f"gpu-check {part}: {time.perf_counter() - start:.0f} s", flush=True)
        if proc.returncode == 0 and result.is_file():
            report["parts"][part] = json.loads(result.read_text())
        else:
            report["errors"][part] = f"exit {proc.returncode}: {proc.stderr[-3000:]}"
            print(report["errors"][part], file=sys.stderr)
        _write(out, report, shapes=SHAPES[backbone, dry])
    return report


def _write(out: Path, report: dict, shapes: CheckShapes) -> None:
    from glus.io import atomic_write_json, atomic_write_text

    report["settings"] = asdict(shapes)
    atomic_write_json(out / "gpu.json", report)
    atomic_write_text(out / "gpu.md", format_report(report))


def main(argv: list[str] | None = None) -> int:
    """The per-part entry (`python -m glus.tools.gpu_check --part NAME ...`), run by `check` in a child process."""
    p = argparse.ArgumentParser(prog="python -m glus.tools.gpu_check")
    p.add_argument("--part", choices=PARTS, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--data", required=True)
    p.add_argument("--dry", action="store_true")
    p.add_argument("--backbone", choices=BACKBONES, default="lisa")
    args = p.parse_args(argv)
    if args.dry:
        import torch

        torch.manual_seed(0)
    result = run_part(args.part, SHAPES[args.backbone, args.dry], args.device, Path(args.data))
    from glus.io import atomic_write_json

    atomic_write_json(Path(args.out) / f"part_{args.part}.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
