"""The plain VOS path: `glus vos`, `glus vos-eval`, `glus study vos-table` and `glus rds importance`."""
from __future__ import annotations

from pathlib import Path

from glus.commands.common import load_for_inference, model_args, split_args
from glus.errors import GlusError


def _vos(args) -> int:
    from glus.infer.vos_job import run_vos_job

    model, _, _ = load_for_inference(args, kind="vos")
    summary = run_vos_job(model, args.ckpt, args.frames, args.mask, args.out, start=args.start,
                          snapshot_every=args.snapshot_every, progress=not args.quiet)
    print(f"{summary['written']} frame(s) written ({summary['frames']} in the video, objects {summary['objects']}, "
          f"from frame {summary['start']}): {args.out}")
    return 0


def _vos_eval(args) -> int:
    from glus.eval.vos_eval import evaluate_vos, format_vos_table, write_vos_results

    model, _, _ = load_for_inference(args, kind="vos")
    if args.rds_choice:
        if model.segmenter.rds is None:
            raise GlusError(f"--rds-choice: {args.ckpt} has no RDS router. Fix: leave the option out, or give an "
                            "RDS export (recipes/rds/)")
        model.segmenter.rds.choice = args.rds_choice
    result = evaluate_vos(model, args.root, args.data, max_videos=args.max_videos, progress=not args.quiet,
                          windows=args.windows)
    write_vos_results(args.out, result)
    print(format_vos_table({args.ckpt: result}))
    if args.windows:
        first, last = result[f"first_{args.windows}"], result[f"last_{args.windows}"]
        print(f"drift: J&F {first['jf']:.3f} over each object's first {args.windows} frames from its first "
              f"appearance, {last['jf']:.3f} over the last {args.windows} ({last['jf'] - first['jf']:+.3f})")
    print(f"-> {args.out}/vos_metrics.json")
    return 0


def _rds_importance(args) -> int:
    from glus.data.cache import load_split
    from glus.train.rds_importance import importance_job

    model, _, _ = load_for_inference(args, kind="vos")
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


def add_parsers(sub) -> None:
    p = sub.add_parser("vos", help="the plain VOS path: a mask on one frame propagated through a folder of frames, "
                       "one palette PNG per frame (streaming, resumable)")
    model_args(p, "a plain VOS export (glus fit --config recipes/vos*.yaml: runs/<recipe>/latest/export)")
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
    model_args(p, "a plain VOS export")
    split_args(p, "a split with ground truth, e.g. mevis/valid_u")
    p.add_argument("--out", required=True, help="folder for vos_metrics.json and vos_per_expression.csv")
    p.add_argument("--max-videos", type=int, default=None)
    p.add_argument("--windows", type=int, default=None, metavar="W",
                   help="also J&F over each expression's first W frames from its first appearance and over the last "
                        "W frames of its video (drift on long videos: glus data synth --frames 300)")
    p.add_argument("--rds-choice", choices=("router", "random"), default=None,
                   help="RDS exports: the blocks each frame runs, the router's or as many drawn at random (a control)")
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
    model_args(p, what="a plain VOS export (glus fit --config recipes/vos*.yaml)")
    split_args(p, "the calibration split, e.g. mevis/train")
    p.add_argument("--frames", type=int, default=64, help="calibration frames, spread over the split's videos")
    p.add_argument("--out", required=True, help="the JSON file")
    p.set_defaults(func=_rds_importance)
