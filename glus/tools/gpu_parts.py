"""The four parts of `glus tools gpu-check` (see `glus.tools.gpu_check`): what each builds, runs and measures, at the 7B
shapes on CUDA or the tiny ones on the CPU (`CheckShapes`)."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from lightning.pytorch.callbacks import Callback

EXPRESSIONS = ("the red circle moving left", "the blue square", "the object that rises and falls",
               "the green triangle behind the bar")
# dense bf16 tensor-core peaks from the datasheets (TFLOP/s), by a name fragment of torch.cuda.get_device_name
PEAK_BF16_TFLOPS = (("H200", 989.4), ("H100 PCIe", 756.0), ("H100", 989.4), ("A100", 312.0), ("L40S", 362.1),
                    ("A6000", 154.8), ("4090", 165.2))


@dataclass(frozen=True)
class CheckShapes:
    name: str
    recipe: str
    train_warmup: int            # steps not timed (allocator, autotuning, DeepSpeed buckets)
    train_steps: int             # steps timed
    infer_frames: int
    infer_size: tuple[int, int]  # (W, H)
    infer_expressions: int
    stream_frames: int
    stream_sizes: dict = field(default_factory=dict)  # label -> (W, H)
    stream_mark: int = 100       # memory is read after this many frames and after the last
    compile_backend: str = "inductor"  # the compile part: `glus predict --compile BACKEND`
    # at the 7B shapes the recipe's builder is replaced by this one: the same settings, random weights
    random_builder: str = "glus.model.build.published.RandomWeightsGLUSBuilder"


FULL = CheckShapes("7b", "recipes/glus_standard.yaml", 2, 6, 32, (854, 480), 4, 1000,
                   {"1080p": (1920, 1080), "4k": (3840, 2160)}, 100, "inductor")
DRY = CheckShapes("tiny", "recipes/synthetic.yaml", 1, 2, 6, (160, 90), 2, 12,
                  {"1080p/8": (240, 135), "4k/8": (480, 270)}, 4, "eager")  # eager: graph capture only, fast
# `--backbone qwen2.5-vl-7b`: GLUS on Qwen2.5-VL-7B (recipes/glus_qwen2_5_vl_7b.yaml); dry: the tiny Qwen recipe
SHAPES = {("lisa", False): FULL, ("lisa", True): DRY,
          ("qwen2.5-vl-7b", False): replace(FULL, recipe="recipes/glus_qwen2_5_vl_7b.yaml",
                                            random_builder="glus.model.build.qwen.RandomWeightsQwenGLUSBuilder"),
          ("qwen2.5-vl-7b", True): replace(DRY, recipe="recipes/synthetic_qwen.yaml")}
BACKBONES = ("lisa", "qwen2.5-vl-7b")


# ---- measuring ------------------------------------------------------------------------------------------

class PeakMemory:
    """Peak device memory on CUDA (the caching allocator's allocated bytes); on the CPU the process' resident
    set, sampled whenever `read` is called (a dry run's figure, not a peak)."""

    def __init__(self, device: str):
        import torch

        self.cuda = device.startswith("cuda")
        self.torch, self.host = torch, 0
        self.reset()

    def reset(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
        self.host = _rss()

    def read(self) -> int:
        if self.cuda:
            self.torch.cuda.synchronize()
            return int(self.torch.cuda.max_memory_allocated())
        self.host = max(self.host, _rss())
        return self.host


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def peak_tflops(device: str) -> tuple[str, float | None]:
    """(device name, dense bf16 peak in TFLOP/s or None when unknown: then no utilisation is given)."""
    if not device.startswith("cuda"):
        import platform

        return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)", None
    import torch

    name = torch.cuda.get_device_name()
    return name, next((peak for fragment, peak in PEAK_BF16_TFLOPS if fragment in name), None)


# ---- building -------------------------------------------------------------------------------------------

def load_recipe(shapes: CheckShapes) -> dict:
    import yaml

    return yaml.safe_load(Path(shapes.recipe).read_text())


def builder_spec(shapes: CheckShapes, recipe: dict, device: str) -> dict:
    """The recipe's builder; at the 7B shapes the same settings with random weights on `device`."""
    spec = recipe["model"]["init_args"]["builder"]
    if shapes.name == "7b":
        spec = {"class_path": shapes.random_builder, "init_args": {**spec["init_args"], "device": device}}
    return spec


def inference_model(shapes: CheckShapes, device: str):
    """(model in eval mode on `device`, bf16 on CUDA as `glus predict --precision auto`, tokenizer)."""
    import torch

    from glus.model.resolve import instantiate
    from glus.model.precision import for_inference

    model, tokenizer = instantiate(builder_spec(shapes, load_recipe(shapes), device)).build()
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    return for_inference(model, device, dtype).eval(), tokenizer


# ---- part 1: training -----------------------------------------------------------------------------------

def train_part(shapes: CheckShapes, device: str, data_root: Path) -> dict:
    import lightning as L

    from glus.model.resolve import instantiate

    recipe = load_recipe(shapes)
    model_args = recipe["model"]["init_args"]
    model_args.update(builder=builder_spec(shapes, recipe, device), evaluation=None, gradient_checkpointing=True)
    # the check's written videos (data_root), also for a recipe that trains on streamed scenes (the embedded default)
    data_args = {k: v for k, v in recipe["data"]["init_args"].items() if k not in ("data_seed", "first_kinds")}
    recipe["data"] = {"class_path": "glus.train.datamodule.GLUSDataModule", "init_args": data_args}
    data_args.update(root=str(data_root), mix={"mevis/train": 1.0}, global_batch=None, steps_per_epoch=10_000,
                     num_workers=min(int(data_args.get("num_workers", 1)), os.cpu_count() or 1))
    module, data = instantiate(recipe["model"]), instantiate(recipe["data"])
    timer = StepTimer(device)
    steps = shapes.train_warmup + shapes.train_steps
    trainer = L.Trainer(accelerator="gpu" if device.startswith("cuda") else "cpu", devices=1,
                        strategy=_strategy(recipe, device), max_steps=steps,
                        precision="bf16-mixed" if device.startswith("cuda") else "32-true",
                        gradient_clip_val=recipe["trainer"].get("gradient_clip_val"), logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[timer], num_sanity_val_steps=0, limit_val_batches=0)
    memory = PeakMemory(device)
    trainer.fit(module, data)
    timed = timer.times[shapes.train_warmup:]
    per_step = sorted(timed)[len(timed) // 2]
    clips = data_args["batch_size"]
    expressions = [sum(counts) for counts in timer.per_clip[shapes.train_warmup:]]
    out = {"steps_timed": len(timed), "seconds_per_step": per_step, "clips_per_step": clips,
           "clips_per_s": clips / per_step, "expressions_per_clip": sum(expressions) / len(expressions) / clips,
           "peak_memory_bytes": memory.read(), "strategy": type(trainer.strategy).__name__,
           "precision": trainer.precision, "losses_finite": timer.finite}
    out["expressions_per_s"] = out["clips_per_s"] * out["expressions_per_clip"]
    out.update(_utilisation(shapes, recipe, device, timer, per_step, timed))
    return out


class StepTimer(Callback):
    """Wall time of every optimiser step (accumulation 1), the device synchronised at both ends, and the
    expressions of each clip of the step's batch (the FLOPs depend on them)."""

    def __init__(self, device: str):
        self.device = device
        self.times, self.per_clip, self.finite = [], [], True

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        sync(self.device)
        self.start = time.perf_counter()
        self.per_clip.append(batch["video_index"].bincount().tolist())

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        sync(self.device)
        self.times.append(time.perf_counter() - self.start)
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.finite = self.finite and bool(loss.isfinite())


def _strategy(recipe: dict, device: str):
    """The recipe's DeepSpeed configuration; on the CPU through `CPUDeepSpeedStrategy` (gloo)."""
    config = recipe["trainer"].get("strategy", {}).get("init_args", {}).get("config", "recipes/deepspeed/zero2.json")
    if device.startswith("cuda"):
        from lightning.pytorch.strategies import DeepSpeedStrategy

        return DeepSpeedStrategy(config=config)
    from glus.train.strategy import CPUDeepSpeedStrategy

    return CPUDeepSpeedStrategy(config=config)


def _utilisation(shapes: CheckShapes, recipe: dict, device: str, timer, per_step: float, timed: list) -> dict:
    """FLOPs of the timed steps from the cost model (forward + backward of each clip at its expression count,
    gradient checkpointing's recomputation not counted: model FLOPs), over the time, over the peak."""
    from glus.tools.cost import training_costs
    from glus.model.resolve import instantiate

    builder = instantiate(builder_spec(shapes, recipe, "meta"))
    model, tokenizer = builder.build_on_meta() if hasattr(builder, "build_on_meta") else builder.build()
    args = recipe["model"]["init_args"]
    cost = {}
    flops = 0.0
    for counts in timer.per_clip[shapes.train_warmup:]:
        for e in counts:
            if e not in cost:
                cost[e] = training_costs(model, tokenizer, args.get("num_context", 4), args.get("num_query", 4),
                                         expressions=e)["total"]
            flops += cost[e]
    achieved = flops / sum(timed)
    name, peak = peak_tflops(device)
    return {"device": name, "model_tflop_per_step": flops / len(timed) / 1e12, "achieved_tflops": achieved / 1e12,
            "peak_tflops": peak, "mfu": achieved / (peak * 1e12) if peak else None}


# ---- part 2: inference, engine vs faithful loop ---------------------------------------------------------

def infer_part(shapes: CheckShapes, device: str) -> dict:
    from glus.data.generated import GeneratedVideo
    from glus.infer.engine import ENGINES

    model, tokenizer = inference_model(shapes, device)
    video = GeneratedVideo(shapes.infer_frames, *shapes.infer_size, seed=1)
    texts = list(EXPRESSIONS[:shapes.infer_expressions])
    warm = GeneratedVideo(2, *shapes.infer_size, seed=9)
    out, masks = {}, {}
    for mode, cls in ENGINES.items():
        engine = cls(model, tokenizer)
        _timed_pass(engine, warm, texts[:1], device)  # kernels chosen and memory pooled before timing
        memory = PeakMemory(device)
        seconds, masks[mode] = _timed_pass(engine, video, texts, device)
        out[mode] = {"seconds": seconds, "expression_frames_per_s": len(texts) * shapes.infer_frames / seconds,
                     "peak_memory_bytes": memory.read()}
    out["speedup"] = out["engine"]["expression_frames_per_s"] / out["faithful"]["expression_frames_per_s"]
    out.update(agreement(masks["engine"], masks["faithful"]))
    out.update(frames=shapes.infer_frames, size=list(shapes.infer_size), expressions=len(texts))
    return out


def compile_part(shapes: CheckShapes, device: str) -> dict:
    """`glus predict --compile`: the engine with the decoder and memory attention compiled, on the inference
    part's video: the first pass (compiling), then expression-frames per second against the uncompiled engine
    and the masks' agreement with it."""
    from glus.data.generated import GeneratedVideo
    from glus.infer.compile import compile_hot_spots
    from glus.infer.engine import StreamingEngine

    model, tokenizer = inference_model(shapes, device)
    video = GeneratedVideo(shapes.infer_frames, *shapes.infer_size, seed=1)
    texts = list(EXPRESSIONS[:shapes.infer_expressions])
    engine = StreamingEngine(model, tokenizer)
    _timed_pass(engine, GeneratedVideo(2, *shapes.infer_size, seed=9), texts[:1], device)  # warm-up
    plain_seconds, plain = _timed_pass(engine, video, texts, device)
    compile_hot_spots(model, backend=shapes.compile_backend)
    first, _ = _timed_pass(engine, video, texts, device)  # compiles: the first frames, then growing memories
    seconds, masks = _timed_pass(engine, video, texts, device)
    units = len(texts) * shapes.infer_frames
    return {"backend": shapes.compile_backend, "first_pass_seconds": first,
            "expression_frames_per_s": units / seconds, "uncompiled_expression_frames_per_s": units / plain_seconds,
            "speedup": plain_seconds / seconds, **agreement(masks, plain)}


def _timed_pass(engine, video, texts: list[str], device: str) -> tuple[float, dict]:
    """(seconds, {(expression, frame): low-resolution mask on the host}) of one forward pass."""
    sync(device)
    start, masks = time.perf_counter(), {}
    for result in engine.run(video, texts):
        low = (result.logits > 0).cpu()  # on the host, as glus predict writes it
        for k, e in enumerate(result.expressions):
            masks[e, result.frame] = low[k]
    sync(device)
    return time.perf_counter() - start, masks


def agreement(a: dict, b: dict) -> dict:
    """IoU per expression-frame (empty against empty counts 1), its mean and minimum, and the foreground share
    (random weights may give empty or full masks, which agree trivially: the share says which)."""
    import torch

    if a.keys() != b.keys():
        raise ValueError("the two modes segmented different expression-frames")
    ious, fg = [], []
    for key in a:
        inter, union = int((a[key] & b[key]).sum()), int((a[key] | b[key]).sum())
        ious.append(inter / union if union else 1.0)
        fg.append(float(a[key].float().mean()))
    return {"iou_mean": sum(ious) / len(ious), "iou_min": min(ious),
            "foreground_share": float(torch.tensor(fg).mean())}


# ---- part 3: streaming at 1080p and 4K ------------------------------------------------------------------

def stream_part(shapes: CheckShapes, device: str) -> dict:
    from glus.data.generated import GeneratedVideo
    from glus.infer.engine import StreamingEngine

    model, tokenizer = inference_model(shapes, device)
    engine = StreamingEngine(model, tokenizer)
    out = {}
    for label, (w, h) in shapes.stream_sizes.items():
        video = GeneratedVideo(shapes.stream_frames, w, h, seed=2)
        memory = PeakMemory(device)
        start, at_mark = time.perf_counter(), None
        for i, result in enumerate(engine.run(video, list(EXPRESSIONS[:1])), 1):
            result.masks_at(model, h, w).cpu()  # the full-size mask, as glus predict writes it
            if i == shapes.stream_mark:
                at_mark = memory.read()
        sync(device)
        seconds = time.perf_counter() - start
        at_end = memory.read()
        out[label] = {"size": [w, h], "frames": shapes.stream_frames, "frames_per_s": shapes.stream_frames / seconds,
                      "peak_memory_at_mark_bytes": at_mark, "peak_memory_bytes": at_end,
                      "mark": shapes.stream_mark, "growth": at_end / at_mark if at_mark else None}
    return out


def run_part(part: str, shapes: CheckShapes, device: str, data_root: Path) -> dict:
    return {"train": lambda: train_part(shapes, device, data_root), "infer": lambda: infer_part(shapes, device),
            "stream": lambda: stream_part(shapes, device), "compile": lambda: compile_part(shapes, device)}[part]()
