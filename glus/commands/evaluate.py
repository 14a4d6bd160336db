"""`glus evaluate`, `glus submit` and `glus visualize`: what is done with a prediction folder; `glus validate`:
an export's J&F as `glus fit` reports it; and `glus study ablation-table`: the figures of several trained runs side
by side."""
from __future__ import annotations

import argparse
import os

from glus.commands.common import prediction_args, split_args


def _evaluate(args) -> int:
    from glus.data.cache import load_split
    from glus.eval.evaluate import evaluate, print_table, write_results
    from glus.eval.metrics import by_kind

    index = load_split(args.root, args.data)
    results, scored = evaluate(args.pred, index, missing=args.missing, workers=args.workers,
                               progress=not args.quiet)
    kinds = index.kinds()  # synthetic data only
    if kinds:
        results["by_kind"] = by_kind(scored.scores, kinds)
    default = f"{args.pred.rstrip('/')}/results_{args.data.replace('/', '_')}.json"
    out_json, out_csv = write_results(results, scored, args.out_json or default)
    print_table(results)
    for kind, m in results.get("by_kind", {}).items():
        print(f"  {kind:12} J&F {m['jf']:.3f} ({m['count']})")
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


class _AblationEntry(argparse.Action):
    """--row and --pending append to one list, so the table keeps the order they were given in (two separate
    lists would lose where the pending rows sit among the others)."""

    def __call__(self, parser, namespace, values, option_string=None):
        if self.const == "row" and len(values) < 2:
            raise argparse.ArgumentError(self, "give NAME and at least one SOURCE (one per seed); a row without "
                                         "results yet: --pending NAME REASON")
        entries = list(getattr(namespace, self.dest) or [])  # a copy: the default list is shared
        if self.const == "versus":
            if not entries or entries[-1][0] != "row":
                raise argparse.ArgumentError(self, "--versus follows the --row it applies to")
            entries[-1] = (*entries[-1][:3], values[0])
        else:
            entries.append((self.const, values[0], values[1:], None))
        setattr(namespace, self.dest, entries)


def _ablation_table(args) -> int:
    from glus.errors import GlusError
    from glus.studies.ablation import AblationRow, ablation_table, output_paths

    if not args.entries:
        raise GlusError("ablation-table: give at least one --row NAME SOURCE [SOURCE ...] or --pending NAME REASON")
    rows = [AblationRow(name, rest, versus=versus) if kind == "row" else AblationRow(name, pending=rest[0])
            for kind, name, rest, versus in args.entries]
    print(ablation_table(rows, args.out, title=args.title))
    print("-> " + ", ".join(str(p) for p in output_paths(args.out)))
    return 0


def _validate(args) -> int:
    """The clip-wise J&F `glus fit` reports (glus.train.module.fit_report), of an export on any split with ground
    truth: e.g. the embedded default on synthetic videos of another data seed (held-out behaviour)."""
    from contextlib import nullcontext
    from pathlib import Path

    from glus.data.cache import load_split
    from glus.model.memory import memory_off
    from glus.model.mllm import PromptBuilder
    from glus.model.weights.load import load_export
    from glus.train.module import BLANK_TEXT, GLUSModule, fit_report, write_results

    model, tokenizer, recipe = load_export(args.ckpt)
    hp = GLUSModule.recipe_settings(recipe)
    prompts = PromptBuilder(tokenizer, tokens_per_frame=model.mllm.tokens_per_frame(), num_context=hp["num_context"],
                            label_mode=hp["label_mode"], template=model.template)
    text = (lambda t: BLANK_TEXT) if hp["blank_text"] else (lambda t: t)  # a control reads what its fit read
    index = load_split(args.root, args.data)
    with memory_off(model) if args.memory_off else nullcontext():
        scores_all, scores, kept = fit_report(model, prompts, index, hp["num_context"], hp["num_query"], text,
                                              args.max_videos, args.overlays)
    metrics = {**scores_all, "split": args.data, "root": str(args.root), "ckpt": str(args.ckpt),
               "memory": "off" if args.memory_off else "on"}
    write_results(Path(args.out), metrics, scores, kept)
    print(f"J&F {metrics['jf']:.3f} (J {metrics['j']:.3f}, F {metrics['f']:.3f}) on {args.data} of {args.root}"
          + "".join(f"\n  {k:12} {m['jf']:.3f} ({m['count']})" for k, m in metrics.get("by_kind", {}).items())
          + f"\n-> {args.out}/metrics.json")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("validate", help="a GLUS export's J&F on a split with ground truth, clip-wise as glus fit "
                       "reports it (per kind on synthetic data); e.g. on synthetic videos of another seed")
    p.add_argument("--ckpt", required=True, help="a GLUS export folder (runs/<recipe>/latest/export)")
    split_args(p, "a split with ground truth, e.g. mevis/valid_u")
    p.add_argument("--out", required=True, help="folder for metrics.json, per_expression.csv and overlays/")
    p.add_argument("--max-videos", type=int, default=None)
    p.add_argument("--overlays", type=int, default=0, help="overlay GIFs of the first N expressions")
    p.add_argument("--memory-off", action="store_true",
                   help="the control: the export with no memory (every frame decoded as the first of a pass)")
    p.set_defaults(func=_validate)

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

    p = sub.add_parser("ablation-table", help="one table (and bar chart) of ablation rows, each a mean ± half range "
                       "over the runs of several seeds")
    p.add_argument("--row", dest="entries", action=_AblationEntry, const="row", nargs="+", default=[],
                   metavar=("NAME", "SOURCE"), help="NAME SOURCE [SOURCE ...]: a row and its results, one per seed "
                   "(repeat --row for each row, in table order): run folders holding "
                   "metrics.json (e.g. runs/<recipe>_s0/latest) or JSON files with j, f, jf and by_kind")
    p.add_argument("--pending", dest="entries", action=_AblationEntry, const="pending", nargs=2, default=[],
                   metavar=("NAME", "REASON"),
                   help="a row with no results yet, printed with its reason where its J&F would be")
    p.add_argument("--versus", dest="entries", action=_AblationEntry, const="versus", nargs=1, metavar="NAME",
                   help="after a --row: read its change against the row NAME above it rather than the previous "
                   "one (a variant beside the published row, a step measured under another protocol)")
    p.add_argument("--title", default="GLUS ablation")
    p.add_argument("--out", required=True, help="path without suffix: gets .md, .json and .png")
    p.set_defaults(func=_ablation_table)
