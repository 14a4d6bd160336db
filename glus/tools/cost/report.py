"""The report: `model_costs` (inference and training figures of one model), `format_costs` (their Markdown
tables), `describe` (the shapes they are counted at) and the unit and byte formatting helpers."""
from __future__ import annotations

from glus.tools.cost.counting import _dtype
from glus.tools.cost.inference import VOS_PARTS, inference_costs
from glus.tools.cost.stages import DEFAULT_EXPRESSION
from glus.tools.cost.training import training_costs


def _unit(values) -> tuple[float, str]:
    top = max([abs(v) for v in values] + [1.0])
    return (1e12, "TFLOP") if top >= 1e11 else (1e9, "GFLOP") if top >= 1e8 else (1e6, "MFLOP")


def _fmt(v: float, scale: float) -> str:
    x = v / scale
    return f"{x:.3f}" if abs(x) < 10 else f"{x:.2f}" if abs(x) < 1000 else f"{x:,.0f}"


def _cell(mode: dict, keys, scale: float) -> str:
    value = sum(mode.get(k, 0.0) for k in keys)
    return _fmt(value, scale) if value else "-"


def _bytes(n: float) -> str:
    for unit, size in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


COLUMNS = (("vision", ("clip",)), ("LLM", ("llm",)), ("SAM-2 encoder", ("sam_encoder",)),
           ("decoder + [SEG] proj.", ("decode", "seg_projection")), ("memory", ("memory_read", "memory_write")),
           ("VOS path", VOS_PARTS))


def format_costs(costs: dict) -> str:
    """Markdown tables of `{"inference": inference_costs(...), "training": training_costs(...)}` (either may
    be absent), with the settings they were counted with."""
    lines: list[str] = []
    inf, tr = costs.get("inference"), costs.get("training")
    if costs.get("model"):
        lines += [f"model: {costs['model']}", ""]
    if inf:
        s = inf["settings"]
        scale, unit = _unit([m["total"] for m in inf["modes"].values()])
        lines.append(f"## Inference, {unit} per {'expression' if inf['kind'] == 'glus' else 'object'}-frame")
        lines.append("")
        if inf["kind"] == "glus":
            t = inf["tokens"]
            w = s["window"]
            lines.append(f"settings: video of {s['frames']} frames, {s['expressions']} expressions (batched by the "
                         f"engine), {s['num_context']} context frames, window {w}; expression {s['expression']!r}")
            lines.append(f"tokens ({t['tokenizer']} tokenizer): {t['image_per_frame']} per image "
                         f"({t['visual_per_frame']} visual); whole prompt {t['full'][w]}; prefix {t['prefix']} + "
                         f"suffix {t['suffix'][w]} (window {w})")
            lines.append("")
        glus = inf["kind"] == "glus"
        cols = [(name, keys) for name, keys in COLUMNS if any(k in m for m in inf["modes"].values() for k in keys)]
        lines.append("| mode | " + " | ".join(n for n, _ in cols) + " | total |" + (" vs faithful |" if glus else ""))
        lines.append("|---" * (len(cols) + 2 + glus) + "|")
        for rows, suffix in ((inf["modes"], ""), (inf.get("steady", {}), ", steady frame")):
            for name, m in rows.items():
                cells = [_cell(m, keys, scale) for _, keys in cols]
                rel = f" {m['total'] / rows['faithful']['total']:.3f} |" if glus else ""
                lines.append(f"| {name}{suffix} | " + " | ".join(cells) + f" | {_fmt(m['total'], scale)} |{rel}")
        lines.append("")
        if glus:
            lines.append("steady frame: a frame with a full window and the pass' last memory. sparse K: GLUS on every "
                         "K-th frame (and the last), the VOS path both ways between anchors.")
        else:
            lines.append(f"the VOS path from a given mask over {s['frames']} frames; steady frame: the pass' last.")
        lines.append("")
        pscale, punit = _unit(inf["parts"].values())
        lines.append(f"| unit cost | {punit} |")
        lines.append("|---|---|")
        for name, v in inf["parts"].items():
            lines.append(f"| {name} | {_fmt(v, pscale)} |")
        lines.append("")
    if tr:
        s = tr["settings"]
        scale, unit = _unit([tr["total"]])
        if tr["kind"] == "glus":
            what = (f"1 clip ({s['num_context']} context + {s['num_query']} query frames, {s['expressions']} "
                    f"expressions, {s['tokens']} tokens per prompt, {s['tokenizer']} tokenizer), gradient "
                    f"checkpointing {'on' if s['gradient_checkpointing'] else 'off'}")
        else:
            what = f"1 clip ({s['num_frames']} frames, {s['objects']} objects)"
        lines.append(f"## Training, {unit} per sample: {what}")
        lines.append("")
        lines.append(f"| part | forward {unit} |")
        lines.append("|---|---|")
        for name, v in tr["forward"].items():
            lines.append(f"| {name} | {_fmt(v, scale)} |")
        lines.append(f"| **forward** | {_fmt(tr['forward_total'], scale)} |")
        lines.append(f"| **backward** (counted) | {_fmt(tr['backward_total'], scale)} |")
        lines.append(f"| **forward + backward** | {_fmt(tr['total'], scale)} |")
        lines.append(f"| per {tr['unit']} | {_fmt(tr['per_unit'], scale)} |")
        lines.append("")
        lines.append(f"backward / forward = {tr['backward_over_forward']:.2f} (the 3x rule would say 2.00 for a "
                     "fully trained model; frozen parts and no_grad encoders bring it down, recomputation up)")
        lines.append("")
        mem = tr["memory"]
        lines.append("| memory | bytes |")
        lines.append("|---|---|")
        for dtype, n in mem["parameter_bytes"].items():
            lines.append(f"| parameters, {dtype} | {_bytes(n)} |")
        lines.append(f"| parameters, all ({mem['parameters']:,}) | {_bytes(sum(mem['parameter_bytes'].values()))} |")
        lines.append(f"| gradients ({mem['trainable']:,} trainable) | {_bytes(mem['gradient_bytes'])} |")
        lines.append(f"| AdamW states (2 x float32) | {_bytes(mem['adam_bytes'])} |")
        if "activation_bytes" in mem:
            lines.append(f"| activations saved for backward, 1 sample | {_bytes(mem['activation_bytes'])} |")
        lines.append("")
    return "\n".join(lines)


def describe(model) -> str:
    """One line: the shapes the figures are counted at."""
    parts = []
    if hasattr(model, "mllm"):
        v, lm = model.mllm.vision_tower.config, model.mllm.lm_config
        tower = "Qwen2.5-VL vision encoder" if "qwen" in type(v).__name__.lower() else "CLIP"
        parts.append(f"{tower} {v.num_hidden_layers} layers x {v.hidden_size} at {model.mllm.image_size} px "
                     f"({model.mllm.tokens_per_frame()} tokens per frame)")
        parts.append(f"LLM {lm.num_hidden_layers} layers x {lm.hidden_size}, vocabulary {lm.vocab_size}, "
                     f"{str(_dtype(model.mllm.language_model)).replace('torch.', '')}")
    seg = model.segmenter
    parts.append(f"SAM-2 {sum(p.numel() for p in seg.sam.image_encoder.parameters()) / 1e6:.3g}M-parameter "
                 f"encoder at {seg.image_size} px")
    memory = seg.memory
    n = getattr(memory, "num_memories", None)
    parts.append(f"memory {type(memory).__name__}" + (f" ({n} memories)" if n else ""))
    return "; ".join(parts)


def model_costs(model, tokenizer=None, train: dict | None = None, frames: int = 32, expressions: int = 8,
                every=(4, 8, 16), window: int = 4, expression: str = DEFAULT_EXPRESSION, vos=None,
                training: bool = True) -> dict:
    """Both reports for one model: {"inference": ..., "training": ...}; `train` holds `training_costs`'s
    settings (as `model_from_recipe` reads them from a recipe)."""
    train = dict(train or {})
    out = {"inference": inference_costs(model, tokenizer, frames=frames, expressions=expressions, every=every,
                                        num_context=train.get("num_context", 4), window=window,
                                        expression=expression, vos=vos)}
    if training:
        keys = ("num_context", "num_query", "expressions", "gradient_checkpointing", "label_mode", "num_frames",
                "objects")
        out["training"] = training_costs(model, tokenizer, expression=expression,
                                         **{k: train[k] for k in keys if k in train})
    return out
