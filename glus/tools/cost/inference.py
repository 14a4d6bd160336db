"""Inference FLOPs per expression-frame: `InferenceSettings`, `token_counts`, the sums that follow each mode's
loop in `glus.infer` (faithful loop, streaming engine, sparse mode, the VOS path alone), the steady-frame and
unit costs, and `inference_costs`, which puts them together."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from glus.data.samplers import query_window
from glus.tools.cost.counting import as_meta
from glus.tools.cost.stages import DEFAULT_EXPRESSION, StageCosts, prompt_builder
from glus.infer.sparse import anchor_positions

GLUS_PARTS = ("clip", "llm", "sam_encoder", "seg_projection", "memory_read", "decode", "memory_write")
VOS_PARTS = ("vos_encoder", "vos_memory_read", "vos_decode", "vos_memory_write")


@dataclass
class InferenceSettings:
    frames: int = 32             # frames of the video (one forward pass)
    expressions: int = 8         # expressions of the video (the engine batches them)
    num_context: int = 4         # context frames of the prompt
    window: int = 4              # query frames per window (stride 1)
    every: tuple = (4, 8, 16)    # sparse mode's K
    expression: str = DEFAULT_EXPRESSION  # the text every expression is given (it sets the text tokens)


def token_counts(builder, window: int, expression: str = DEFAULT_EXPRESSION) -> dict:
    """Prompt lengths from the real PromptBuilder: the whole inference prompt (faithful loop) and the engine's
    prefix / suffix split, for each window length 1..window."""
    full, suffix = {}, {}
    prefix = None
    for w in range(1, window + 1):
        full[w] = len(builder.build(expression, w)["input_ids"])
        pre, suf = builder.split_for_cache(expression, w)
        prefix, suffix[w] = len(pre), len(suf)
    image = len(builder._image())
    return {"prefix": prefix, "suffix": suffix, "full": full, "image_per_frame": image,
            "visual_per_frame": builder.k}


def _zero() -> dict[str, float]:
    return defaultdict(float)


def _add_pass(total: dict, pass_parts: dict, scale: float = 1.0, prefix: str = "") -> None:
    total[prefix + "decode"] += scale * sum(pass_parts["decode"]) + scale * sum(pass_parts.get("prompt", []))
    total[prefix + "memory_read"] += scale * sum(pass_parts["memory_read"])
    total[prefix + "memory_write"] += scale * sum(pass_parts["memory_write"])


def _faithful(stages: StageCosts, s: InferenceSettings, tokens: dict) -> dict:
    total = _zero()
    order = list(range(s.frames))
    for i in order:
        w = len(query_window(order, i, s.window))
        total["clip"] += s.expressions * stages.clip(s.num_context + w)
        total["llm"] += s.expressions * stages.llm(1, tokens["full"][w])
        total["sam_encoder"] += s.expressions * stages.sam_encoder()
        total["seg_projection"] += s.expressions * stages.seg_projection(1)
    _add_pass(total, stages.glus_pass(s.frames, 1), s.expressions)
    return total


def _engine(stages: StageCosts, s: InferenceSettings, tokens: dict, frames: int | None = None) -> dict:
    frames = s.frames if frames is None else frames
    total = _zero()
    total["clip"] += stages.clip(s.num_context)            # open(): the context frames, once per video
    total["llm"] += stages.llm(1, tokens["prefix"])        # open(): the prefix's KV cache, once per video
    order = list(range(frames))
    for i in order:
        w = len(query_window(order, i, s.window))
        total["clip"] += stages.clip(1)
        total["llm"] += stages.llm(s.expressions, tokens["suffix"][w], tokens["prefix"])
        total["sam_encoder"] += stages.sam_encoder()
        total["seg_projection"] += stages.seg_projection(s.expressions)
    _add_pass(total, stages.glus_pass(frames, s.expressions))
    return total


def _sparse(stages: StageCosts, s: InferenceSettings, tokens: dict, every: int) -> dict:
    anchors = anchor_positions(s.frames, every)
    total = _engine(stages, s, tokens, frames=len(anchors))  # GLUS sees the anchors only
    for a, b in zip(anchors, anchors[1:]):
        gap = b - a - 1
        if gap < 1:
            continue
        total["vos_encoder"] += stages.sam_encoder(gap + 2, vos=True)  # a..b, shared by both directions
        _add_pass(total, stages.vos_pass(gap + 1, s.expressions), 2.0, prefix="vos_")  # from a, and from b
    return total


def _vos_alone(stages: StageCosts, frames: int) -> dict:
    total = _zero()
    total["vos_encoder"] += stages.sam_encoder(frames, vos=True)
    _add_pass(total, stages.vos_pass(frames, 1), prefix="vos_")
    return total


def _finish(total: dict, units: int) -> dict:
    out = {k: v / units for k, v in total.items() if v}
    out["total"] = sum(out.values())
    return out


def inference_costs(model, tokenizer=None, frames: int = 32, expressions: int = 8, every=(4, 8, 16),
                    num_context: int = 4, window: int = 4, expression: str = DEFAULT_EXPRESSION,
                    vos=None) -> dict:
    """FLOPs per expression-frame of GLUS inference (faithful loop, engine, sparse mode for each K in `every`,
    the VOS path alone), and the unit costs they are made of. `model`: a GLUS (or a VOSModel: the VOS path
    only), on any device (counted on a meta copy); `vos`: the VOSModel of sparse mode's gaps (default: the
    model's own segmenter and memory)."""
    settings = InferenceSettings(frames, expressions, num_context, window, tuple(every), expression)
    vos_seg = as_meta(vos).segmenter if vos is not None else None
    stages = StageCosts(model, vos_seg, pass_length=frames)
    result = {"kind": "glus" if hasattr(stages.model, "mllm") else "vos", "settings": vars(settings).copy()}
    vos_path = _vos_alone(stages, frames)
    steady_vos = stages.vos_pass(frames, 1)
    if result["kind"] == "vos":
        result["modes"] = {"vos": _finish(vos_path, frames)}
        result["steady"] = {"vos": _finish({"vos_encoder": stages.sam_encoder(vos=True),
                                            **_last(steady_vos, "vos_")}, 1)}
        result["parts"] = _vos_units(stages, frames)
        return result
    builder, own = prompt_builder(stages.model, tokenizer, num_context)
    tokens = token_counts(builder, window, expression)
    result["tokens"] = {**tokens, "tokenizer": "model" if own else "stand-in (tiny BPE)"}
    modes = {"faithful": _finish(_faithful(stages, settings, tokens), frames * expressions),
             "engine": _finish(_engine(stages, settings, tokens), frames * expressions)}
    for k in every:
        modes[f"sparse K={k}"] = _finish(_sparse(stages, settings, tokens, k), frames * expressions)
    modes["vos"] = _finish(vos_path, frames)
    result["modes"] = modes
    result["steady"] = _steady(stages, settings, tokens, steady_vos)
    result["parts"] = {**_glus_units(stages, settings, tokens), **_vos_units(stages, frames)}
    return result


def _last(pass_parts: dict, prefix: str = "") -> dict:
    return {prefix + "decode": pass_parts["decode"][-1] + pass_parts.get("prompt", [0])[-1],
            prefix + "memory_read": pass_parts["memory_read"][-1],
            prefix + "memory_write": pass_parts["memory_write"][-1]}


def _steady(stages: StageCosts, s: InferenceSettings, tokens: dict, vos_pass: dict) -> dict:
    """A frame with a full window and the pass' last memory (per expression-frame)."""
    w, E = s.window, s.expressions
    one = stages.glus_pass(s.frames, 1)
    faithful = {"clip": stages.clip(s.num_context + w), "llm": stages.llm(1, tokens["full"][w]),
                "sam_encoder": stages.sam_encoder(), "seg_projection": stages.seg_projection(1), **_last(one)}
    batch = {k: v / E for k, v in _last(stages.glus_pass(s.frames, E)).items()}
    engine = {"clip": stages.clip(1) / E, "llm": stages.llm(E, tokens["suffix"][w], tokens["prefix"]) / E,
              "sam_encoder": stages.sam_encoder() / E, "seg_projection": stages.seg_projection(E) / E, **batch}
    vos = {"vos_encoder": stages.sam_encoder(vos=True), **_last(vos_pass, "vos_")}
    return {"faithful": _finish(faithful, 1), "engine": _finish(engine, 1), "vos": _finish(vos, 1)}


def _glus_units(stages: StageCosts, s: InferenceSettings, tokens: dict) -> dict:
    w, P = s.window, tokens["prefix"]
    one = stages.glus_pass(s.frames, 1)
    return {
        "vision tower + projector, 1 frame": stages.clip(1),
        f"LLM, whole prompt ({tokens['full'][w]} tokens, window {w})": stages.llm(1, tokens["full"][w]),
        f"LLM, prefix ({P} tokens, once per video)": stages.llm(1, P),
        f"LLM, suffix ({tokens['suffix'][w]} tokens over a {P}-token KV cache)": stages.llm(1, tokens["suffix"][w], P),
        "SAM-2 image encoder, 1 frame": stages.sam_encoder(),
        "[SEG] projection, 1 prompt": stages.seg_projection(1),
        "mask decoder, 1 prompt": one["decode"][-1],
        f"memory read, 1 object-frame (pass mean over {s.frames} frames)": _mean(one["memory_read"]),
        "memory read, 1 object-frame (full memory)": one["memory_read"][-1],
        f"memory write, 1 object-frame (pass mean)": _mean(one["memory_write"]),
    }


def _vos_units(stages: StageCosts, frames: int) -> dict:
    p = stages.vos_pass(frames, 1)
    tracked = [d + q for d, q in zip(p["decode"][1:], p["prompt"][1:])] or [0]
    return {
        "VOS path: image encoder, 1 frame": stages.sam_encoder(vos=True),
        "VOS path: given mask (start frame), 1 object": p["decode"][0] + p["prompt"][0] + p["memory_write"][0],
        "VOS path: decoder (no prompt), 1 object-frame": tracked[-1],
        f"VOS path: memory read, 1 object-frame (pass mean over {frames} frames)": _mean(p["memory_read"][1:] or [0]),
        "VOS path: memory read, 1 object-frame (full memory)": p["memory_read"][-1],
        "VOS path: memory write, 1 object-frame": p["memory_write"][-1],
    }


def _mean(values) -> float:
    return sum(values) / max(len(values), 1)
