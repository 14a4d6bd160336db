"""`glus data synth|check|index`: synthetic data, dataset checks and split indexes."""
from __future__ import annotations

import json


def _data_synth(args) -> int:
    from glus.data.synth import write_synthetic

    if args.frames is not None:
        from glus.data.synth.long import write_long

        n = write_long(args.out, seed=args.seed, videos=args.videos, num_frames=args.frames)
        print(f"wrote {args.out}/mevis/valid_u: {n} long videos of {args.frames} frames")
        return 0
    counts = write_synthetic(args.out, seed=args.seed, videos=args.videos, no_target_rate=args.no_target_rate,
                             valid_per_kind=args.valid_per_kind, temporal_per_kind=args.temporal_per_kind,
                             temporal_videos=args.temporal_videos)
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


def add_parsers(sub) -> None:
    from glus.data.formats import FORMATS, SPLIT_NAMES

    data = sub.add_parser("data", help="synthetic data, dataset checks and indexes").add_subparsers(
        dest="data_command", required=True)

    p = data.add_parser("synth", help="write the synthetic referring videos (MeViS + Ref-YouTube-VOS layouts)")
    p.add_argument("--out", required=True, help="output folder; gets mevis/ and refytvos/")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--videos", type=int, default=32, help="training videos (valid_u gets a quarter)")
    p.add_argument("--valid-per-kind", type=int, default=None, metavar="N",
                   help="valid_u holds N expressions of each kind (appearance, look-alike, motion, plural) instead "
                        "of a quarter of the training videos' count")
    p.add_argument("--temporal-per-kind", type=int, default=0, metavar="N",
                   help="valid_u also holds N expressions of each temporal kind (event, crossing, order: expressions "
                        "that no single frame answers; 40-64-frame videos, one expression each)")
    p.add_argument("--temporal-videos", type=int, default=0, metavar="M",
                   help="train also holds M temporal videos (the three kinds in turn)")
    p.add_argument("--no-target-rate", type=float, default=0.0,
                   help="fraction of videos given a MeViS-v2 no-target expression")
    p.add_argument("--frames", type=int, default=None, metavar="T",
                   help="instead: --videos long videos of T frames (objects bounce, cross, leave and come back), "
                        "into OUT/mevis/valid_u with masks, one expression per object, for drift "
                        "(glus vos-eval --windows 50)")
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
