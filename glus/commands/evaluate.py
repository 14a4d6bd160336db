"""`glus evaluate`, `glus submit` and `glus visualize`: what is done with a prediction folder."""
from __future__ import annotations

import os

from glus.commands.common import prediction_args


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


def add_parsers(sub) -> None:
    p = sub.add_parser("evaluate", help="J, F, J&F (A, R for ReVOS) of a prediction folder with official aggregation")
    prediction_args(p, data_help="a split with ground truth, e.g. mevis/valid_u, revos/valid")
    p.add_argument("--out-json", default=None, help="default: PRED/results_<split>.json (+ a per-expression .csv)")
    p.add_argument("--missing", choices=("fail", "zero"), default="fail",
                   help="expressions with missing or mis-sized PNGs: fail listing them (default) or score them 0")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="processes scoring videos in parallel")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("submit", help="check a prediction folder is complete and zip it for a benchmark server")
    prediction_args(p, data_help="e.g. mevis/valid, refytvos/valid")
    p.add_argument("--out", required=True, help="the zip file")
    p.set_defaults(func=_submit)

    p = sub.add_parser("visualize", help="overlay videos (and per-frame IoU plots) of chosen expressions")
    prediction_args(p)
    p.add_argument("--out", required=True)
    p.add_argument("--expressions", nargs="*", default=None, help="VIDEO/EXP_ID ... (default: the first --count)")
    p.add_argument("--count", type=int, default=4)
    p.add_argument("--format", choices=("mp4", "gif"), default="mp4")
    p.set_defaults(func=_visualize)
