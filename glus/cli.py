"""The `glus` command. Subcommands import their heavy dependencies only when they run.

The everyday commands sit at the top (`glus predict`); experiments and self-measurement sit in two groups
(`glus study ablation-table`, `glus tools bench`). Each grouped command keeps its former flat spelling
(`glus ablation-table`, `glus bench`, `glus runs compare`) as a hidden alias, so older scripts keep working."""
from __future__ import annotations

import argparse
import sys

from glus.commands import data, evaluate, infer, tools, train, vos
from glus.errors import GlusError

GROUPS = {  # group -> (help, the commands it holds)
    "study": ("experiments on trained runs: the ablation table, held-out tables, probes, key-frame and VOS reports",
              ("ablation-table", "heldout", "compare-runs", "keyframes-report", "vos-table", "naming-probe",
               "attention-probe", "motion-probe")),
    "tools": ("self-measurement: figures (bench), the GPU check, model summary and cost",
              ("bench", "gpu-check", "model")),
}
FORMER = {"compare-runs": ("runs", "compare"), "heldout": ("runs", "heldout")}  # renamed when grouped


class _Router:
    """Stands in for the top-level subparsers while the topic modules add their commands: a command of a group
    goes into the group, and the top level keeps its former spelling as a hidden alias (the same parser)."""

    def __init__(self, top, groups: dict):
        self.top, self.groups, self.former_groups = top, groups, {}
        self.home = {name: group for group, (_, names) in GROUPS.items() for name in names}

    def add_parser(self, name, **kwargs):
        if name not in self.home:
            return self.top.add_parser(name, **kwargs)
        parser = self.groups[self.home[name]].add_parser(name, **kwargs)
        self._alias(name, parser)
        return parser

    def _alias(self, name, parser) -> None:
        if name not in FORMER:
            self.top.choices[name] = parser  # in the parse table, not in the help listing
            return
        group, old = FORMER[name]
        if group not in self.former_groups:
            self.former_groups[group] = self.top.add_parser(group).add_subparsers(dest=f"{group}_command",
                                                                                 required=True)
        self.former_groups[group].choices[old] = parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glus", description="GLUS referring video object segmentation: "
                                     "data, training, inference and evaluation.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups = {name: sub.add_parser(name, help=text).add_subparsers(dest=f"{name}_command", required=True,
                                                                    metavar="COMMAND")
              for name, (text, _) in GROUPS.items()}
    router = _Router(sub, groups)
    # the order of these calls is the order `glus --help` lists the everyday subcommands in
    data.add_parsers(router)  # data
    train.add_parsers(router)  # fit; study compare-runs, heldout
    infer.add_predict_parser(router)  # predict
    evaluate.add_parsers(router)  # validate, evaluate, submit, visualize; study ablation-table
    infer.add_parsers(router)  # pseudolabel, keyframes; study keyframes-report
    vos.add_parsers(router)  # vos, vos-eval, rds; study vos-table
    tools.add_parsers(router)  # study naming-probe, attention-probe, motion-probe; tools bench, gpu-check, model
    # the groups were made first (the router needs them) but are listed after the everyday commands
    sub._choices_actions.sort(key=lambda action: action.dest in GROUPS)  # argparse's listing (a stable sort)
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
