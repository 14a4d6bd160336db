"""`glus tools bench`, `glus tools gpu-check`, `glus tools model summary` and `glus tools model cost`: figures and model inspection."""
from __future__ import annotations

import json
from pathlib import Path

from glus.errors import GlusError


def _bench(args) -> int:
    from glus.tools.bench import run_bench

    run_bench(args.out, long_frames=args.long_frames, vos_frames=args.vos_frames, parts=args.only or None)
    return 0


def _gpu_check(args) -> int:
    from glus.tools.gpu_check import check

    report = check(Path(args.out), dry=args.dry, device=args.device, data_root=args.data, parts=args.parts,
                   backbone=args.backbone)
    print((Path(args.out) / "gpu.md").read_text())
    return 1 if report["errors"] else 0


def _model_summary(args) -> int:
    from glus.model.build.tiny import E2E_MEMORY, tiny_glus
    from glus.model.build.published import glus_7b_on_meta
    from glus.model.mllm.lora import format_report, trainable_report

    if args.recipe:  # the recipe's builder: a 7B-class one (LISA, Qwen2.5-VL) on the meta device
        from glus.tools.cost import model_from_recipe

        model = model_from_recipe(args.recipe)[0]
    else:
        memory = E2E_MEMORY if args.memory == "e2e" else None
        model = glus_7b_on_meta(args.sam, memory=memory) if args.preset == "glus-7b" else tiny_glus()[0]
    print(format_report(trainable_report(model)))
    return 0


def _model_cost(args) -> int:
    from glus.tools.cost import describe, format_costs, model_costs, model_from_recipe, preset_model

    if args.recipe and args.preset:
        raise GlusError("glus tools model cost: give --recipe or --preset, not both")
    if args.recipe:
        model, tokenizer, train = model_from_recipe(args.recipe)
        name = args.recipe
    else:
        from glus.model.build.tiny import E2E_MEMORY

        preset = args.preset or "glus-7b"
        model, tokenizer, train = preset_model(preset, E2E_MEMORY if args.memory == "e2e" else None)
        name = f"preset {preset}"
    if args.tokenizer:
        from transformers import AutoTokenizer

        from glus.model.mllm import add_glus_tokens

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer, local_files_only=True)
        add_glus_tokens(tokenizer)
    vos = None
    if args.vos_recipe:
        vos, _, _ = model_from_recipe(args.vos_recipe)
    costs = model_costs(model, tokenizer, train, frames=args.frames, expressions=args.expressions,
                        every=tuple(args.every), window=args.window, expression=args.expression, vos=vos,
                        training=not args.no_training)
    costs["model"] = f"{name}: {describe(model)}" + (f"; sparse mode's VOS path: {args.vos_recipe}" if vos else "")
    print(format_costs(costs))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(costs, indent=2))
        print(f"-> {args.json}")
    return 0


def _motion_probe(args) -> int:
    from glus.studies.motion_probe import ProbeConfig, run_probe

    cfg = ProbeConfig(steps=args.steps, seed=args.seed, layers=args.layers, width=args.width,
                      frame_embedding=args.frame_embedding, aux=args.aux, simple=args.simple,
                      temporal=args.temporal, aux_at=args.aux_at)
    report = run_probe(cfg, args.out, progress=not args.quiet)
    for point in report["curve"]:
        print(f"step {point['step']}: held-out accuracy {point['accuracy']:.3f} (chance {report['chance']:.3f})")
    print(f"-> {args.out}")
    return 0


def _probe_setup(args):
    """(model, tokenizer, prompts, num_context, index) of a probe command: the export, its conversation, the split."""
    from glus.data.cache import load_split
    from glus.model.weights.load import load_export
    from glus.model.mllm import PromptBuilder

    model, tokenizer, recipe = load_export(args.ckpt)
    num_context = recipe["model"]["init_args"].get("num_context", 4)
    prompts = PromptBuilder(tokenizer, tokens_per_frame=model.mllm.tokens_per_frame(), num_context=num_context,
                            template=model.template)
    return model, tokenizer, prompts, num_context, load_split(args.root, args.data)


def _write_probe(args, report: dict) -> None:
    from glus.io import atomic_write_json

    if args.out:
        atomic_write_json(args.out, {"ckpt": str(args.ckpt), "split": args.data, "by_kind": report})
        print(f"-> {args.out}")


def _naming_probe(args) -> int:
    from glus.studies.naming_probe import naming_accuracy

    model, tokenizer, prompts, num_context, index = _probe_setup(args)
    report = naming_accuracy(model, tokenizer, prompts, index, num_context)
    for kind, row in report.items():
        print(f"{kind}: the [SEG] names the object for {row['named']:.2f} of {row['count']} expressions "
              f"(chance 1 in 18), an object of the video for {row['in_video']:.2f} (chance {row['chance']:.2f})")
    _write_probe(args, report)
    return 0


def _attention_probe(args) -> int:
    from glus.studies.attention_probe import seg_attention

    model, _, prompts, num_context, index = _probe_setup(args)
    report = seg_attention(model, prompts, index, num_context)
    for kind, row in report.items():
        share = row["share"]
        print(f"{kind} ({row['count']} expressions): share of the visual tokens: referred object "
              f"{share['referred']:.3f}, other objects {share['other']:.3f}, background {share['background']:.3f}")
        for layer, a in enumerate(row["attention"]):
            print(f"  layer {layer}: [SEG] attention on the referred object {a['referred']:.3f} "
                  f"({a['referred'] / share['referred']:.1f}x its share), other objects {a['other']:.3f} "
                  f"({a['other'] / share['other']:.1f}x), background {a['background']:.3f}")
        if "pointer" in row:  # the [SEG] pointer's maps of the query frames
            print("  pointer map (mean sigmoid): " + ", ".join(f"{g} {v:.3f}" for g, v in row["pointer"].items()))
    _write_probe(args, report)
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("naming-probe", help="does a tiny GLUS' [SEG] name the colour and shape of the object an "
                       "expression refers to? per kind of synthetic expression (docs/embedded_default.md)")
    p.add_argument("--ckpt", required=True, help="an export folder (trained with loss_weights.expression > 0)")
    p.add_argument("--root", default="data/synthetic")
    p.add_argument("--data", default="mevis/valid_u")
    p.add_argument("--out", help="JSON file for the figures")
    p.set_defaults(func=_naming_probe)
    p = sub.add_parser("attention-probe", help="where does a tiny GLUS' [SEG] look: the referred object's visual "
                       "tokens, the other objects' or the background? per LLM layer and kind of synthetic expression "
                       "(and, with the [SEG] pointer, where its map points: the referred object or its look-alike)")
    p.add_argument("--ckpt", required=True, help="an export folder")
    p.add_argument("--root", default="data/synthetic")
    p.add_argument("--data", default="mevis/valid_u")
    p.add_argument("--out", help="JSON file for the figures")
    p.set_defaults(func=_attention_probe)
    p = sub.add_parser("motion-probe", help="can the tiny LLaMA pick an object by its motion from ideal object "
                       "tokens? (no vision tower: docs/embedded_default.md)")
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layers", type=int, default=2, help="LLaMA layers (the default's: 2)")
    p.add_argument("--width", type=int, default=64, help="LLaMA hidden size (the default's: 64)")
    p.add_argument("--frame-embedding", action="store_true", help="a learned frame-index embedding on the tokens")
    p.add_argument("--aux", action="store_true", help="each object token also names its object's motion")
    p.add_argument("--simple", action="store_true", help="only left, right, up, down and still objects")
    p.add_argument("--temporal", type=int, default=0, help="bidirectional encoder layers over the visual tokens "
                   "of all frames before the LLaMA (a video projector; default: none)")
    p.add_argument("--aux-at", choices=("llm", "visual"), default="llm", help="where --aux reads its target: the "
                   "LLM's last states (default) or its input tokens (after --temporal)")
    p.add_argument("--out", required=True, help="JSON file for the accuracy curve and chance")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_motion_probe)
    p = sub.add_parser("bench", help="figures, not tests: engine vs faithful speed, streaming peak memory")
    p.add_argument("--out", default="runs/bench", help="working folder (synthetic videos, bench.json)")
    p.add_argument("--long-frames", type=int, default=2000, help="frames of the long video for peak memory")
    p.add_argument("--vos-frames", type=int, default=10000, help="frames of the plain VOS path's long video")
    p.add_argument("--only", action="append", choices=("glus", "vos", "sparse", "rds"),
                   help="run only these parts (repeatable; default: all)")
    p.set_defaults(func=_bench)

    p = sub.add_parser("gpu-check", help="the one prepared GPU check at the 7B shapes with random weights: training "
                       "step time and MFU, engine vs faithful loop, streaming memory at 1080p/4K (glus.tools.gpu_check)")
    p.add_argument("--out", default="runs/gpu", help="writes gpu.json and gpu.md here")
    p.add_argument("--dry", action="store_true", help="the same script at the tiny shapes on the CPU (a rot check)")
    p.add_argument("--backbone", choices=("lisa", "qwen2.5-vl-7b"), default="lisa",
                   help="the multimodal LM: LISA-7B-v1 (GLUS-S, recipes/glus_standard.yaml) or Qwen2.5-VL-7B "
                   "(recipes/glus_qwen2_5_vl_7b.yaml)")
    p.add_argument("--device", default=None, help="default: cuda (cpu with --dry)")
    p.add_argument("--data", default=None, help="synthetic training data (default: OUT/data, written if missing)")
    p.add_argument("--parts", nargs="+", choices=("train", "infer", "stream", "compile"),
                   default=["train", "infer", "stream", "compile"])
    p.set_defaults(func=_gpu_check)

    model = sub.add_parser("model", help="model inspection").add_subparsers(dest="model_command", required=True)
    p = model.add_parser("summary", help="trainable parameters by module (the 7B shapes on the meta device)")
    p.add_argument("--preset", choices=("glus-7b", "tiny"), default="glus-7b")
    p.add_argument("--recipe", help="a training recipe instead of --preset (e.g. recipes/glus_qwen2_5_vl_7b.yaml): "
                   "its model at its shapes, no checkpoint read")
    p.add_argument("--sam", default="sam2_hiera_l", help="SAM-2 config for the glus-7b preset (published: SAM-2.0 L)")
    p.add_argument("--memory", choices=("published", "e2e"), default="published",
                   help="the published memory bank (frozen) or ours (trained end to end)")
    p.set_defaults(func=_model_summary)

    p = model.add_parser("cost", help="FLOPs per expression-frame (faithful loop, engine, sparse mode, the VOS path) "
                         "and per training sample, and memory: counted by running the model's modules on the meta "
                         "device (glus.tools.cost)")
    p.add_argument("--recipe", default=None, help="a recipe (GLUS or plain VOS); LISA-7B recipes are built with "
                   "LISA-7B-v1's shapes on the meta device, no checkpoint read")
    p.add_argument("--preset", choices=("glus-7b", "tiny"), default=None, help="instead of --recipe (default glus-7b)")
    p.add_argument("--memory", choices=("published", "e2e"), default="published", help="--preset's memory bank")
    p.add_argument("--frames", type=int, default=32, help="frames of the video the per-frame figures average over")
    p.add_argument("--expressions", type=int, default=8, help="expressions of the video (the engine batches them)")
    p.add_argument("--every", type=int, nargs="+", default=[4, 8, 16], help="sparse mode's K values")
    p.add_argument("--window", type=int, default=4, help="query frames per window")
    p.add_argument("--expression", default="the person walking to the left",
                   help="the expression text (it sets the prompt's text tokens)")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder for the text token counts (default: the "
                   "recipe's own when its folder exists, else the tiny one stands in: image tokens stay exact)")
    p.add_argument("--vos-recipe", default=None, help="sparse mode's VOS model (default: the model's own SAM-2 and "
                   "memory)")
    p.add_argument("--no-training", action="store_true", help="inference figures only")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.set_defaults(func=_model_cost)
