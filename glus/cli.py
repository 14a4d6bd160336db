"""The `glus` command. Subcommands import their heavy dependencies only when they run."""
from __future__ import annotations

import argparse
import json
import sys

from glus.data.errors import DataError


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
    from glus.model.factory import glus_7b_on_meta, tiny_glus
    from glus.model.mllm.lora import format_report, trainable_report

    model = glus_7b_on_meta(args.sam) if args.preset == "glus-7b" else tiny_glus()[0]
    print(format_report(trainable_report(model)))
    return 0


def _fit(args) -> int:
    from glus.train.cli import fit

    fit(args.lightning_args, runs_root=args.runs, resume=args.resume, name=args.name, wandb=args.wandb)
    return 0


def _runs_compare(args) -> int:
    from glus.train.report import merge_control

    merge_control(args.run, args.control)
    return 0


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

    model = sub.add_parser("model", help="model inspection").add_subparsers(dest="model_command", required=True)
    p = model.add_parser("summary", help="trainable parameters by module (the 7B shapes on the meta device)")
    p.add_argument("--preset", choices=("glus-7b", "tiny"), default="glus-7b")
    p.add_argument("--sam", default="sam2.1_hiera_l", help="SAM-2 config for the glus-7b preset")
    p.set_defaults(func=_model_summary)
    return parser


def main(argv: list[str] | None = None) -> int:
    args, rest = build_parser().parse_known_args(argv)
    if args.command == "fit":
        args.lightning_args = rest
    elif rest:
        build_parser().error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return args.func(args)
    except DataError as err:
        print(f"glus: error: {err.describe()}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
