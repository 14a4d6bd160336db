"""`glus fit` (LightningCLI overrides travel in args.lightning_args: glus.cli.main puts them there) and
`glus study compare-runs` / `glus study heldout` (formerly `glus study compare-runs` / `glus study heldout`)."""
from __future__ import annotations


def _fit(args) -> int:
    from glus.train.cli import fit

    fit(args.lightning_args, runs_root=args.runs, resume=args.resume, name=args.name, wandb=args.wandb,
        seed=args.seed)
    return 0


def _runs_compare(args) -> int:
    from glus.studies.runs import merge_control

    merge_control(args.run, args.control)
    return 0


def _runs_heldout(args) -> int:
    from glus.studies.runs import heldout_table

    heldout_table(args.reference, args.heldout, args.tolerance, args.out)
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("fit", help="train a recipe: glus fit --config recipes/NAME.yaml [LightningCLI overrides]")
    p.add_argument("--runs", default="runs", help="runs live under RUNS/<recipe>/<time>, RUNS/<recipe>/latest")
    p.add_argument("--name", default=None, help="run family name (default: the recipe file's name)")
    p.add_argument("--resume", default=None, help="'latest' or a run folder: continue from its last.ckpt")
    p.add_argument("--wandb", choices=("offline", "online", "disabled"), default="offline")
    p.add_argument("--seed", type=int, default=None,
                   help="one seed for every seed of the recipe: Lightning's, the model's initialisation, the module's "
                        "and the data's (default: the recipe's own)")
    p.set_defaults(func=_fit)

    p = sub.add_parser("compare-runs", help="add a blank-text control's figures to a run's metrics.json")
    p.add_argument("run")
    p.add_argument("control")
    p.set_defaults(func=_runs_compare)
    p = sub.add_parser("heldout", help="J&F per kind of one export on its data seed and on others (glus validate "
                                        "folders), with the largest change of each kind")
    p.add_argument("reference", help="glus validate folder of the export's own data seed")
    p.add_argument("heldout", nargs="+", help="glus validate folders of other data seeds")
    p.add_argument("--tolerance", type=float, default=0.05)
    p.add_argument("--out", default=None, help="write the table as JSON here")
    p.set_defaults(func=_runs_heldout)
