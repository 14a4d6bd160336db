"""The `glus` command. Subcommands import their heavy dependencies only when they run."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from glus.errors import GlusError


def _data_synth(args) -> int:
    from glus.data.synth import write_synthetic

    counts = write_synthetic(args.out, seed=args.seed, videos=args.videos, no_target_rate=args.no_target_rate)
    print(f"wrote {args.out}/mevis and {args.out}/refytvos: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def _data_check(args) -> int:
    from glus.data.check import check_dataset, print_reports

    n = print_reports(check_dataset(args.dir, args.format, decode_frames=not args.headers_only))
    print(f"{n} problem(s)" if n else "ok: no problems")
    return 1 if n else 0


def _data_index(args) -> int:
    from glus.data.cache import load_split

    index = load_split(args.root, args.data, on_error=args.on_error)
    print(json.dumps(index.summary(), indent=2))
    return 0


def _model_summary(args) -> int:
    from glus.model.factory import E2E_MEMORY, glus_7b_on_meta, tiny_glus
    from glus.model.mllm.lora import format_report, trainable_report

    memory = E2E_MEMORY if args.memory == "e2e" else None
    model = glus_7b_on_meta(args.sam, memory=memory) if args.preset == "glus-7b" else tiny_glus()[0]
    print(format_report(trainable_report(model)))
    return 0


def _model_cost(args) -> int:
    from glus.eval.cost import describe, format_costs, model_costs, model_from_recipe, preset_model

    if args.recipe and args.preset:
        raise GlusError("glus model cost: give --recipe or --preset, not both")
    if args.recipe:
        model, tokenizer, train = model_from_recipe(args.recipe)
        name = args.recipe
    else:
        from glus.model.factory import E2E_MEMORY

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


def _fit(args) -> int:
    from glus.train.cli import fit

    fit(args.lightning_args, runs_root=args.runs, resume=args.resume, name=args.name, wandb=args.wandb)
    return 0


def _runs_compare(args) -> int:
    from glus.train.report import merge_control

    merge_control(args.run, args.control)
    return 0


def _load_for_inference(args, kind: str = "glus"):
    """(model, tokenizer, recipe) on the chosen device; `kind` the model the command needs ("glus" or "selector"),
    so that a selector export given to predict (or a GLUS export to keyframes) is named, not an AttributeError."""
    import torch

    from glus.model.load import load_model

    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(args.device if args.device != "auto" else
                          (f"cuda:{local}" if torch.cuda.is_available() else "cpu"))
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16,
             "auto": torch.bfloat16 if device.type == "cuda" else torch.float32}[args.precision]
    model, tokenizer, recipe = load_model(args.ckpt, sam_config=args.sam_config, sam_image_size=args.sam_image_size,
                                          clip_folder=args.clip_folder, dtype=dtype)
    have = "selector" if hasattr(model, "score_head") else "glus" if hasattr(model, "mllm") else "vos"
    if have != kind:
        what = {"selector": "a key-frame selector export", "glus": "a GLUS model", "vos": "a plain VOS export"}
        use = {"selector": "glus keyframes", "glus": "glus predict / pseudolabel / keyframes-report",
               "vos": "glus vos / vos-eval, or glus predict --mode sparse --vos"}
        need = {"selector": "a key-frame selector export", "glus": "a GLUS export or released folder",
                "vos": "a plain VOS export (glus fit --config recipes/vos*.yaml)"}
        raise GlusError(f"--ckpt {args.ckpt} is {what[have]}: this command needs {need[kind]}. Fix: give it to "
                        f"{use[have]}, or pass the other export here")
    from glus.model.precision import for_inference

    return for_inference(model, device, dtype), tokenizer, recipe


def _vos(args) -> int:
    from glus.infer.vos_job import run_vos_job

    model, _, _ = _load_for_inference(args, kind="vos")
    summary = run_vos_job(model, args.ckpt, args.frames, args.mask, args.out, start=args.start,
                          snapshot_every=args.snapshot_every, progress=not args.quiet)
    print(f"{summary['written']} frame(s) written ({summary['frames']} in the video, objects {summary['objects']}, "
          f"from frame {summary['start']}): {args.out}")
    return 0


def _vos_eval(args) -> int:
    from glus.eval.vos_eval import evaluate_vos, format_vos_table, write_vos_results

    model, _, _ = _load_for_inference(args, kind="vos")
    result = evaluate_vos(model, args.root, args.data, max_videos=args.max_videos, progress=not args.quiet)
    write_vos_results(args.out, result)
    print(format_vos_table({args.ckpt: result}))
    print(f"-> {args.out}/vos_metrics.json")
    return 0


def _rds_importance(args) -> int:
    from glus.data.cache import load_split
    from glus.eval.importance import importance_job

    model, _, _ = _load_for_inference(args, kind="vos")
    report = importance_job(model, load_split(args.root, args.data), args.out, frames=args.frames,
                            source=str(Path(args.ckpt).resolve()))
    print(f"block importance over {report['frames']} frames, most important first: {report['ranking']} -> {args.out}")
    return 0


def _vos_table(args) -> int:
    from glus.eval.vos_eval import vos_table

    runs = dict(item.split("=", 1) for item in args.runs)
    print(vos_table(runs, args.out, control=args.control))
    print(f"-> {args.out}.md, {args.out}.json")
    return 0


def _predict(args) -> int:
    from glus.data.cache import load_split
    from glus.infer.jobs import parse_shard
    from glus.infer.keyframes import read_keyframes
    from glus.infer.predict import predict_split, write_summary

    index = load_split(args.root, args.data)
    shard = parse_shard(args.shard)
    keyframes = read_keyframes(args.keyframes, index) if args.keyframes else None
    if keyframes:
        print(keyframes.describe())
    model, tokenizer, recipe = _load_for_inference(args)
    if args.compile:
        from glus.infer.compile import compile_hot_spots

        print(f"torch.compile ({args.compile}): {', '.join(compile_hot_spots(model, backend=args.compile))}")
    vos_model = None
    if args.mode == "sparse" or args.vos:
        if not (args.mode == "sparse" and args.vos):
            raise GlusError("--mode sparse and --vos EXPORT go together: sparse mode propagates GLUS' masks with a "
                            "plain VOS export (glus fit --config recipes/vos*.yaml). Fix: pass both, or neither")
        vos_model, _, _ = _load_for_inference(argparse.Namespace(**{**vars(args), "ckpt": args.vos}), kind="vos")
    summary = predict_split(model, tokenizer, index, args.out, mode=args.mode, shard=shard,
                            batch_expressions=args.batch_expressions, num_context=_num_context(recipe),
                            window=args.window, progress=not args.quiet, keyframes=keyframes,
                            vos_model=vos_model, every=args.every,
                            vos_ckpt=str(Path(args.vos).resolve()) if args.vos else None)
    path = write_summary(args.out, summary)
    print(f"{summary.expressions_written} expression(s) written, {summary.expressions_skipped} already complete "
          f"(shard {shard[0]}/{shard[1]}): {args.out}  [{path.name}]")
    return 0


def _num_context(recipe: dict) -> int:
    return recipe.get("model", {}).get("init_args", {}).get("num_context", 4)


def _pseudolabel(args) -> int:
    from glus.data.cache import load_split
    from glus.eval.pseudolabel import check_fraction, pseudolabel_split, write_summary
    from glus.infer.jobs import parse_shard

    shard = parse_shard(args.shard)  # the cheap checks first: a typo should not cost a model load
    check_fraction(args.fraction)
    index = load_split(args.root, args.data)
    model, tokenizer, recipe = _load_for_inference(args)
    summary = pseudolabel_split(model, tokenizer, index, args.out, ckpt=args.ckpt, fraction=args.fraction,
                                seed=args.seed, mode=args.mode, shard=shard,
                                batch_expressions=args.batch_expressions, num_context=_num_context(recipe),
                                window=args.window, progress=not args.quiet)
    path = write_summary(args.out, summary)
    print(f"{summary.rows} row(s) from {summary.videos_written} video(s) written, {summary.videos_skipped} "
          f"already complete (shard {shard[0]}/{shard[1]}): {args.out}  [{path.name}]")
    return 0


def _keyframes(args) -> int:
    from glus.data.cache import load_split
    from glus.infer.jobs import parse_shard
    from glus.infer.keyframe_job import score_split, write_summary

    index = load_split(args.root, args.data)
    shard = parse_shard(args.shard)
    model, tokenizer, _ = _load_for_inference(args, kind="selector")
    summary = score_split(model, tokenizer, index, args.out, ckpt=args.ckpt, shard=shard,
                          batch_frames=args.batch_frames, progress=not args.quiet)
    write_summary(args.out, summary)
    done = (f"key frames of every expression: {summary.keyframes_file}" if summary.keyframes_file else
            "other shards still running: the last one to finish writes the key-frame file")
    print(f"{summary.videos_written} video(s) scored, {summary.videos_skipped} already scored "
          f"(shard {shard[0]}/{shard[1]}); {done}")
    return 0


def _keyframes_report(args) -> int:
    from glus.data.cache import load_split
    from glus.eval.keyframe_report import keyframe_report, format_table

    index = load_split(args.root, args.data)
    model, tokenizer, recipe = _load_for_inference(args)
    report = keyframe_report(model, tokenizer, index, glus_ckpt=args.ckpt, selector_file=args.keyframes,
                             out=args.out, num_context=_num_context(recipe), mode=args.mode,
                             progress=not args.quiet)
    print(format_table(report))
    print(f"wrote {args.out}/keyframes_table.md and .json")
    return 0


def _evaluate(args) -> int:
    from glus.data.cache import load_split
    from glus.eval.evaluate import evaluate, print_table, write_results

    index = load_split(args.root, args.data)
    results, scored = evaluate(args.pred, index, missing=args.missing, workers=args.workers,
                               progress=not args.quiet)
    default = f"{args.pred.rstrip('/')}/results_{args.data.replace('/', '_')}.json"
    out_json, out_csv = write_results(results, scored, args.out_json or default)
    print_table(results)
    print(f"wrote {out_json} and {out_csv}")
    return 0


def _submit(args) -> int:
    from glus.data.cache import load_split
    from glus.eval.submit import write_submission

    info = write_submission(args.pred, load_split(args.root, args.data), args.out)
    print(f"wrote {info['zip']}: {info['files']} PNGs, {info['expressions']} expressions, {info['videos']} videos")
    return 0


def _visualize(args) -> int:
    from glus.data.cache import load_split
    from glus.eval.visualize import visualize

    for path in visualize(args.pred, load_split(args.root, args.data), args.out, args.expressions, args.count,
                          args.format):
        print(path)
    return 0


def _bench(args) -> int:
    from glus.bench import run_bench

    run_bench(args.out, long_frames=args.long_frames, vos_frames=args.vos_frames, parts=args.only or None)
    return 0


def _model_args(p: argparse.ArgumentParser, what: str = "an export folder (written by glus fit: "
                "runs/<recipe>/latest/export) or a released GLUS folder (GLUS-S, GLUS-S-partial, GLUS-A: see "
                "checkpoints/README.md)") -> None:
    p.add_argument("--ckpt", required=True, help=what)
    p.add_argument("--sam-config", default="sam2_hiera_l",
                   help="released folders only: the SAM-2 config they were trained with (published: sam2_hiera_l)")
    p.add_argument("--sam-image-size", type=int, default=1024, help="released folders only: SAM-2 input size")
    p.add_argument("--clip-folder", default=None,
                   help="released folders only: the CLIP tower folder (default: checkpoints/<mm_vision_tower name>)")
    p.add_argument("--device", default="auto", help="auto: cuda:LOCAL_RANK if available, else cpu")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto", help="auto: bf16 on GPU")


def _shard_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shard", default=None, help="RANK/WORLD, e.g. 0/4 (default: torchrun's RANK and WORLD_SIZE; "
                   "each rank takes whole videos)")


def _split_args(p: argparse.ArgumentParser, data_help: str) -> None:
    from glus.data.formats import SPLIT_NAMES

    p.add_argument("--data", required=True, help=f"{data_help} ({', '.join(SPLIT_NAMES)})")
    p.add_argument("--root", required=True, help="data root holding one folder per dataset")


def _prediction_args(p: argparse.ArgumentParser, data_help: str = "the split the predictions are for") -> None:
    p.add_argument("--pred", required=True, help="a prediction folder written by glus predict")
    p.add_argument("--data", required=True, help=data_help)
    p.add_argument("--root", required=True, help="data root holding one folder per dataset")


def _gpu_check(args) -> int:
    from glus.gpu_check import check

    report = check(Path(args.out), dry=args.dry, device=args.device, data_root=args.data, parts=args.parts)
    print((Path(args.out) / "gpu.md").read_text())
    return 1 if report["errors"] else 0


def build_parser() -> argparse.ArgumentParser:
    from glus.data.formats import FORMATS, SPLIT_NAMES

    parser = argparse.ArgumentParser(prog="glus", description="GLUS referring video object segmentation: "
                                     "data, training, inference and evaluation.")
    sub = parser.add_subparsers(dest="command", required=True)
    data = sub.add_parser("data", help="synthetic data, dataset checks and indexes").add_subparsers(
        dest="data_command", required=True)

    p = data.add_parser("synth", help="write the synthetic referring videos (MeViS + Ref-YouTube-VOS layouts)")
    p.add_argument("--out", required=True, help="output folder; gets mevis/ and refytvos/")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--videos", type=int, default=32, help="training videos (valid_u gets a quarter)")
    p.add_argument("--no-target-rate", type=float, default=0.0,
                   help="fraction of videos given a MeViS-v2 no-target expression")
    p.set_defaults(func=_data_synth)

    p = data.add_parser("check", help="validate a dataset folder; non-zero exit on any problem")
    p.add_argument("dir", help="the dataset folder, e.g. DATA/mevis")
    p.add_argument("--format", required=True, choices=sorted(FORMATS))
    p.add_argument("--headers-only", action="store_true", help="read frame headers only (faster, misses truncation)")
    p.set_defaults(func=_data_check)

    p = data.add_parser("index", help="build (or load the cached) index of a split and print its summary")
    p.add_argument("--root", required=True, help="data root holding one folder per dataset")
    p.add_argument("--data", required=True, help=f"split: {', '.join(SPLIT_NAMES)}")
    p.add_argument("--on-error", choices=("fail", "skip"), default="fail")
    p.set_defaults(func=_data_index)

    p = sub.add_parser("fit", help="train a recipe: glus fit --config recipes/NAME.yaml [LightningCLI overrides]")
    p.add_argument("--runs", default="runs", help="runs live under RUNS/<recipe>/<time>, RUNS/<recipe>/latest")
    p.add_argument("--name", default=None, help="run family name (default: the recipe file's name)")
    p.add_argument("--resume", default=None, help="'latest' or a run folder: continue from its last.ckpt")
    p.add_argument("--wandb", choices=("offline", "online", "disabled"), default="offline")
    p.set_defaults(func=_fit)

    runs = sub.add_parser("runs", help="training runs").add_subparsers(dest="runs_command", required=True)
    p = runs.add_parser("compare", help="add a blank-text control's figures to a run's metrics.json")
    p.add_argument("run")
    p.add_argument("control")
    p.set_defaults(func=_runs_compare)

    p = sub.add_parser("predict", help="masks of every expression of a split: OUT/<video>/<exp_id>/<frame>.png")
    _model_args(p)
    _split_args(p, "split")
    p.add_argument("--out", required=True, help="prediction folder (a rerun resumes: finished expressions are kept)")
    p.add_argument("--mode", choices=("engine", "faithful", "sparse"), default="engine",
                   help="engine: streaming with shared features and KV reuse; faithful: the published loop; sparse: "
                   "GLUS on every --every-th frame, the plain VOS path (--vos) in between")
    p.add_argument("--every", type=int, default=8, help="sparse mode: GLUS on every K-th frame of a pass and its "
                   "last (0 with --keyframes: the key frame only)")
    p.add_argument("--vos", default=None, help="sparse mode: a plain VOS export (glus fit --config recipes/vos*.yaml)")
    p.add_argument("--keyframes", default=None, help="FILE or 'first': start each expression at its key frame "
                   "(FILE: glus keyframes' output or the published --score_json format) and propagate forward and "
                   "backward from it; expressions missing from FILE start at their first frame")
    _shard_arg(p)
    p.add_argument("--batch-expressions", type=int, default=16, help="expressions of a video decoded together")
    p.add_argument("--compile", nargs="?", const="inductor", default=None, metavar="BACKEND",
                   help="torch.compile the mask decoder and memory attention in place (default backend: inductor; "
                   "the first frames wait for the compiler)")
    p.add_argument("--window", type=int, default=4, help="query frames per window (stride 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_predict)

    p = sub.add_parser("vos", help="the plain VOS path: a mask on one frame propagated through a folder of frames, "
                       "one palette PNG per frame (streaming, resumable)")
    _model_args(p, "a plain VOS export (glus fit --config recipes/vos*.yaml: runs/<recipe>/latest/export)")
    p.add_argument("--frames", required=True, help="folder of frames (jpg/png), named in temporal order")
    p.add_argument("--mask", required=True, help="palette PNG, one index per object (0: background)")
    p.add_argument("--start", default=None, help="the frame the mask belongs to (name without extension; default: "
                   "the mask's own name if it names a frame, else the first frame)")
    p.add_argument("--out", required=True, help="output folder (a rerun resumes from the last snapshot)")
    p.add_argument("--snapshot-every", type=int, default=100, help="frames between memory snapshots (resume points)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_vos)

    p = sub.add_parser("vos-eval", help="J&F of a plain VOS export on a split with ground truth: each object given "
                       "at its first appearance, propagated both ways (per kind on synthetic data)")
    _model_args(p, "a plain VOS export")
    _split_args(p, "a split with ground truth, e.g. mevis/valid_u")
    p.add_argument("--out", required=True, help="folder for vos_metrics.json and vos_per_expression.csv")
    p.add_argument("--max-videos", type=int, default=None)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_vos_eval)

    p = sub.add_parser("vos-table", help="one table of trained plain-VOS runs (make train RECIPE=vos_synthetic)")
    p.add_argument("runs", nargs="+", help="NAME=RUN_FOLDER ... (folders holding vos_metrics.json)")
    p.add_argument("--out", required=True, help="table path without suffix: gets .md and .json")
    p.add_argument("--control", default=None, help="the NAME whose J&F the others are compared with")
    p.set_defaults(func=_vos_table)

    rds = sub.add_parser("rds", help="RDS on the SAM-2 encoder").add_subparsers(dest="rds_command", required=True)
    p = rds.add_parser("importance", help="I-LoRA's block importance of a plain VOS export's SAM-2 trunk on "
                       "calibration frames (a JSON file for segmenter.encoder_lora.importance)")
    _model_args(p, what="a plain VOS export (glus fit --config recipes/vos*.yaml)")
    _split_args(p, "the calibration split, e.g. mevis/train")
    p.add_argument("--frames", type=int, default=64, help="calibration frames, spread over the split's videos")
    p.add_argument("--out", required=True, help="the JSON file")
    p.set_defaults(func=_rds_importance)

    p = sub.add_parser("pseudolabel", help="per-frame IoU, J and F of a GLUS export's masks on (part of) a training "
                       "split: the key-frame selector's labels (parquet under OUT/rows)")
    _model_args(p)
    _split_args(p, "a split with ground truth, e.g. mevis/train")
    p.add_argument("--out", required=True, help="output folder (a rerun resumes: finished videos are kept)")
    p.add_argument("--fraction", type=float, default=0.5, help="fraction of the split's videos (published: half)")
    p.add_argument("--seed", type=int, default=0, help="picks the videos of --fraction")
    p.add_argument("--mode", choices=("engine", "faithful"), default="engine")
    _shard_arg(p)
    p.add_argument("--batch-expressions", type=int, default=16)
    p.add_argument("--window", type=int, default=4)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_pseudolabel)

    p = sub.add_parser("keyframes", help="score every frame of every expression with a key-frame selector export "
                       "and write each expression's key frame (published JSON format)")
    _model_args(p, "a key-frame selector export (glus fit --config recipes/selector*.yaml)")
    _split_args(p, "split")
    p.add_argument("--out", required=True, help="the key-frame JSON file; per-frame scores go to OUT.scores/ "
                   "(a rerun resumes)")
    _shard_arg(p)
    p.add_argument("--batch-frames", type=int, default=16, help="target frames scored together")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_keyframes)

    p = sub.add_parser("keyframes-report", help="J&F from the first frame, the selector's and the oracle's key "
                       "frames, and the selector's Spearman and hit rate, on a split with ground truth")
    _model_args(p, "the GLUS export")
    _split_args(p, "a split with ground truth, e.g. mevis/valid_u")
    p.add_argument("--keyframes", required=True, help="the selector's key-frame file (glus keyframes --out)")
    p.add_argument("--out", required=True, help="report folder (labels, predictions, keyframes_table.md/.json)")
    p.add_argument("--mode", choices=("engine", "faithful"), default="engine")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_keyframes_report)

    p = sub.add_parser("evaluate", help="J, F, J&F (A, R for ReVOS) of a prediction folder with official aggregation")
    _prediction_args(p, data_help="a split with ground truth, e.g. mevis/valid_u, revos/valid")
    p.add_argument("--out-json", default=None, help="default: PRED/results_<split>.json (+ a per-expression .csv)")
    p.add_argument("--missing", choices=("fail", "zero"), default="fail",
                   help="expressions with missing or mis-sized PNGs: fail listing them (default) or score them 0")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="processes scoring videos in parallel")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("submit", help="check a prediction folder is complete and zip it for a benchmark server")
    _prediction_args(p, data_help="e.g. mevis/valid, refytvos/valid")
    p.add_argument("--out", required=True, help="the zip file")
    p.set_defaults(func=_submit)

    p = sub.add_parser("visualize", help="overlay videos (and per-frame IoU plots) of chosen expressions")
    _prediction_args(p)
    p.add_argument("--out", required=True)
    p.add_argument("--expressions", nargs="*", default=None, help="VIDEO/EXP_ID ... (default: the first --count)")
    p.add_argument("--count", type=int, default=4)
    p.add_argument("--format", choices=("mp4", "gif"), default="mp4")
    p.set_defaults(func=_visualize)

    p = sub.add_parser("bench", help="figures, not tests: engine vs faithful speed, streaming peak memory")
    p.add_argument("--out", default="runs/bench", help="working folder (synthetic videos, bench.json)")
    p.add_argument("--long-frames", type=int, default=2000, help="frames of the long video for peak memory")
    p.add_argument("--vos-frames", type=int, default=10000, help="frames of the plain VOS path's long video")
    p.add_argument("--only", action="append", choices=("glus", "vos", "sparse", "rds"),
                   help="run only these parts (repeatable; default: all)")
    p.set_defaults(func=_bench)

    p = sub.add_parser("gpu-check", help="the one prepared GPU check at the 7B shapes with random weights: training "
                       "step time and MFU, engine vs faithful loop, streaming memory at 1080p/4K (glus.gpu_check)")
    p.add_argument("--out", default="runs/gpu", help="writes gpu.json and gpu.md here")
    p.add_argument("--dry", action="store_true", help="the same script at the tiny shapes on the CPU (a rot check)")
    p.add_argument("--device", default=None, help="default: cuda (cpu with --dry)")
    p.add_argument("--data", default=None, help="synthetic training data (default: OUT/data, written if missing)")
    p.add_argument("--parts", nargs="+", choices=("train", "infer", "stream", "compile"),
                   default=["train", "infer", "stream", "compile"])
    p.set_defaults(func=_gpu_check)

    model = sub.add_parser("model", help="model inspection").add_subparsers(dest="model_command", required=True)
    p = model.add_parser("summary", help="trainable parameters by module (the 7B shapes on the meta device)")
    p.add_argument("--preset", choices=("glus-7b", "tiny"), default="glus-7b")
    p.add_argument("--sam", default="sam2_hiera_l", help="SAM-2 config for the glus-7b preset (published: SAM-2.0 L)")
    p.add_argument("--memory", choices=("published", "e2e"), default="published",
                   help="the published memory bank (frozen) or ours (trained end to end)")
    p.set_defaults(func=_model_summary)

    p = model.add_parser("cost", help="FLOPs per expression-frame (faithful loop, engine, sparse mode, the VOS path) "
                         "and per training sample, and memory: counted by running the model's modules on the meta "
                         "device (glus.eval.cost)")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args, rest = build_parser().parse_known_args(argv)
    if args.command == "fit":
        args.lightning_args = rest
    elif rest:
        build_parser().error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return args.func(args)
    except GlusError as err:  # its message names the file, the field and the fix: a traceback would only hide it
        print(f"glus: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
