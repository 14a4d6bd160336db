"""The prepared GPU check (glus.tools.gpu_check, gpu_parts, gpu_report) must not rot: its dry run (the same script at the tiny shapes on the
CPU, CPU ZeRO-2) runs here end to end; its parts' arithmetic is checked by hand; the random-weights builder of
the 7B shapes builds the recipe's model (on the meta device here)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from glus.tools.gpu_parts import agreement
from glus.tools.gpu_report import format_report
REPO = Path(__file__).resolve().parents[1]


def test_dry_run_writes_every_part(tmp_path, synth_root):
    out = tmp_path / "gpu"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "glus", "tools", "gpu-check", "--dry", "--out", str(out), "--data",
                           str(synth_root)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "gpu.json").read_text())
    assert report["errors"] == {} and set(report["parts"]) == {"train", "infer", "stream", "compile"}
    train = report["parts"]["train"]
    assert train["strategy"] == "CPUDeepSpeedStrategy" and train["steps_timed"] == 2 and train["losses_finite"]
    assert train["seconds_per_step"] > 0 and train["expressions_per_clip"] >= 1
    assert train["model_tflop_per_step"] > 0 and train["mfu"] is None  # no peak is known for a CPU
    infer = report["parts"]["infer"]
    # float32 on the CPU: the engine computes what the faithful loop computes (test_infer checks the logits)
    assert infer["iou_mean"] > 0.99 and infer["engine"]["expression_frames_per_s"] > 0
    stream = report["parts"]["stream"]
    assert [s["frames"] for s in stream.values()] == [12, 12]
    assert all(s["peak_memory_bytes"] >= s["peak_memory_at_mark_bytes"] > 0 for s in stream.values())
    compiled = report["parts"]["compile"]
    assert compiled["backend"] == "eager" and compiled["iou_mean"] > 0.99 and compiled["first_pass_seconds"] > 0
    md = (out / "gpu.md").read_text()
    assert all(f"## {h}" in md for h in ("Training", "Inference", "Streaming", "The engine with")) and "failed" not in md


def test_agreement_by_hand():
    a = {(0, 0): torch.tensor([[1, 1], [0, 0]], dtype=torch.bool), (0, 1): torch.zeros(2, 2, dtype=torch.bool)}
    b = {(0, 0): torch.tensor([[1, 0], [0, 0]], dtype=torch.bool), (0, 1): torch.zeros(2, 2, dtype=torch.bool)}
    got = agreement(a, b)
    assert got["iou_min"] == 0.5 and got["iou_mean"] == 0.75  # 1/2, and empty against empty counts 1
    assert got["foreground_share"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="different expression-frames"):
        agreement(a, {(0, 0): b[(0, 0)]})


def test_a_failed_part_is_reported_beside_the_others():
    report = {"shapes": "7b", "device": "X", "torch": "2", "settings": {"recipe": "r.yaml"},
              "parts": {"infer": {"engine": {"expression_frames_per_s": 4.0, "peak_memory_bytes": 2**30},
                                  "faithful": {"expression_frames_per_s": 1.0, "peak_memory_bytes": 2**30},
                                  "speedup": 4.0, "iou_mean": 0.995, "iou_min": 0.9, "foreground_share": 0.2,
                                  "frames": 32, "size": [854, 480], "expressions": 4}},
              "errors": {"train": "exit 1: Traceback ...\ntorch.OutOfMemoryError: CUDA out of memory"}}
    md = format_report(report)
    assert "| engine | 4.00 | 1.00 GiB |" in md and "speed-up 4.00x" in md
    assert "**train failed**: `torch.OutOfMemoryError: CUDA out of memory`" in md


def test_random_weights_builder_builds_the_recipes_model():
    """What gpu-check trains at 7B: glus_standard's builder settings, random weights (built on meta here: the
    same function builds on CUDA), the same parameters and trainable set as the LISA builder's model."""
    from glus.model.build.published import LisaGLUSBuilder, RandomWeightsGLUSBuilder

    recipe = yaml.safe_load((REPO / "recipes" / "glus_standard.yaml").read_text())
    args = recipe["model"]["init_args"]["builder"]["init_args"]
    model, tokenizer = RandomWeightsGLUSBuilder(device="meta", **args).build()
    reference, _ = LisaGLUSBuilder(**args).build_on_meta()
    assert RandomWeightsGLUSBuilder(device="meta", **args).required_paths() == []
    shapes = {n: (tuple(p.shape), p.dtype, p.requires_grad) for n, p in model.named_parameters()}
    assert shapes == {n: (tuple(p.shape), p.dtype, p.requires_grad) for n, p in reference.named_parameters()}
    assert model.mllm.base_lm.get_input_embeddings().weight.dtype == torch.bfloat16
    assert max(tokenizer.get_vocab().values()) < model.mllm.base_lm.get_input_embeddings().num_embeddings


def test_dry_run_on_the_qwen_backbone(tmp_path, synth_root):
    """`--backbone qwen2.5-vl-7b`: the tiny Qwen recipe trained under CPU ZeRO-2 and run by both loops."""
    out = tmp_path / "gpu"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "glus", "tools", "gpu-check", "--dry", "--backbone", "qwen2.5-vl-7b",
                           "--parts", "train", "infer", "--out", str(out), "--data", str(synth_root)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "gpu.json").read_text())
    assert report["errors"] == {} and report["backbone"] == "qwen2.5-vl-7b"
    assert report["settings"]["recipe"] == "recipes/synthetic_qwen.yaml"
    assert report["parts"]["train"]["losses_finite"] and report["parts"]["infer"]["iou_mean"] > 0.99
