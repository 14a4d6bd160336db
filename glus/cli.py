"""The `glus` command. Subcommands import their heavy dependencies only when they run."""
from __future__ import annotations

import argparse
import sys

from glus.commands import data, evaluate, infer, tools, train, vos
from glus.errors import GlusError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glus", description="GLUS referring video object segmentation: "
                                     "data, training, inference and evaluation.")
    sub = parser.add_subparsers(dest="command", required=True)
    # the order of these calls is the order `glus --help` lists the subcommands in
    data.add_parsers(sub)  # data
    train.add_parsers(sub)  # fit, runs
    infer.add_predict_parser(sub)  # predict
    vos.add_parsers(sub)  # vos, vos-eval, vos-table, rds
    infer.add_parsers(sub)  # pseudolabel, keyframes, keyframes-report
    evaluate.add_parsers(sub)  # validate, evaluate, submit, visualize, ablation-table
    tools.add_parsers(sub)  # bench, gpu-check, model, motion-probe
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
