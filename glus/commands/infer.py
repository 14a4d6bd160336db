"""`glus predict`, `glus pseudolabel`, `glus keyframes` and `glus study keyframes-report`: a GLUS (or key-frame
selector) export run over a split."""
from __future__ import annotations

import argparse
from pathlib import Path

from glus.commands.common import load_for_inference, model_args, num_context, shard_arg, split_args
from glus.errors import GlusError


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
    model, tokenizer, recipe = load_for_inference(args)
    if args.compile:
        from glus.infer.compile import compile_hot_spots

        print(f"torch.compile ({args.compile}): {', '.join(compile_hot_spots(model, backend=args.compile))}")
    vos_model = None
    if args.mode == "sparse" or args.vos:
        if not (args.mode == "sparse" and args.vos):
            raise GlusError("--mode sparse and --vos EXPORT go together: sparse mode propagates GLUS' masks with a "
                            "plain VOS export (glus fit --config recipes/vos*.yaml). Fix: pass both, or neither")
        vos_model, _, _ = load_for_inference(argparse.Namespace(**{**vars(args), "ckpt": args.vos}), kind="vos")
    summary = predict_split(model, tokenizer, index, args.out, mode=args.mode, shard=shard,
                            batch_expressions=args.batch_expressions, num_context=num_context(recipe),
                            window=args.window, progress=not args.quiet, keyframes=keyframes,
                            vos_model=vos_model, every=args.every,
                            vos_ckpt=str(Path(args.vos).resolve()) if args.vos else None)
    path = write_summary(args.out, summary)
    print(f"{summary.expressions_written} expression(s) written, {summary.expressions_skipped} already complete "
          f"(shard {shard[0]}/{shard[1]}): {args.out}  [{path.name}]")
    return 0


def _pseudolabel(args) -> int:
    from glus.data.cache import load_split
    from glus.train.pseudolabel import check_fraction, pseudolabel_split, write_summary
    from glus.infer.jobs import parse_shard

    shard = parse_shard(args.shard)  # the cheap checks first: a typo should not cost a model load
    check_fraction(args.fraction)
    index = load_split(args.root, args.data)
    model, tokenizer, recipe = load_for_inference(args)
    summary = pseudolabel_split(model, tokenizer, index, args.out, ckpt=args.ckpt, fraction=args.fraction,
                                seed=args.seed, mode=args.mode, shard=shard,
                                batch_expressions=args.batch_expressions, num_context=num_context(recipe),
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
    model, tokenizer, _ = load_for_inference(args, kind="selector")
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
    from glus.studies.keyframe_report import keyframe_report, format_table

    index = load_split(args.root, args.data)
    model, tokenizer, recipe = load_for_inference(args)
    report = keyframe_report(model, tokenizer, index, glus_ckpt=args.ckpt, selector_file=args.keyframes,
                             out=args.out, num_context=num_context(recipe), mode=args.mode,
                             progress=not args.quiet)
    print(format_table(report))
    print(f"wrote {args.out}/keyframes_table.md and .json")
    return 0


def add_predict_parser(sub) -> None:
    """`glus predict` alone: `glus --help` lists it before the VOS commands, the others of this module after them."""
    p = sub.add_parser("predict", help="masks of every expression of a split: OUT/<video>/<exp_id>/<frame>.png")
    model_args(p)
    split_args(p, "split")
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
    shard_arg(p)
    p.add_argument("--batch-expressions", type=int, default=16, help="expressions of a video decoded together")
    p.add_argument("--compile", nargs="?", const="inductor", default=None, metavar="BACKEND",
                   help="torch.compile the mask decoder and memory attention in place (default backend: inductor; "
                   "the first frames wait for the compiler)")
    p.add_argument("--window", type=int, default=4, help="query frames per window (stride 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_predict)


def add_parsers(sub) -> None:
    """`glus pseudolabel`, `glus keyframes`, `glus study keyframes-report`."""
    p = sub.add_parser("pseudolabel", help="per-frame IoU, J and F of a GLUS export's masks on (part of) a training "
                       "split: the key-frame selector's labels (parquet under OUT/rows)")
    model_args(p)
    split_args(p, "a split with ground truth, e.g. mevis/train")
    p.add_argument("--out", required=True, help="output folder (a rerun resumes: finished videos are kept)")
    p.add_argument("--fraction", type=float, default=0.5, help="fraction of the split's videos (published: half)")
    p.add_argument("--seed", type=int, default=0, help="picks the videos of --fraction")
    p.add_argument("--mode", choices=("engine", "faithful"), default="engine")
    shard_arg(p)
    p.add_argument("--batch-expressions", type=int, default=16)
    p.add_argument("--window", type=int, default=4)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_pseudolabel)

    p = sub.add_parser("keyframes", help="score every frame of every expression with a key-frame selector export "
                       "and write each expression's key frame (published JSON format)")
    model_args(p, "a key-frame selector export (glus fit --config recipes/selector*.yaml)")
    split_args(p, "split")
    p.add_argument("--out", required=True, help="the key-frame JSON file; per-frame scores go to OUT.scores/ "
                   "(a rerun resumes)")
    shard_arg(p)
    p.add_argument("--batch-frames", type=int, default=16, help="target frames scored together")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_keyframes)

    p = sub.add_parser("keyframes-report", help="J&F from the first frame, the selector's and the oracle's key "
                       "frames, and the selector's Spearman and hit rate, on a split with ground truth")
    model_args(p, "the GLUS export")
    split_args(p, "a split with ground truth, e.g. mevis/valid_u")
    p.add_argument("--keyframes", required=True, help="the selector's key-frame file (glus keyframes --out)")
    p.add_argument("--out", required=True, help="report folder (labels, predictions, keyframes_table.md/.json)")
    p.add_argument("--mode", choices=("engine", "faithful"), default="engine")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_keyframes_report)
