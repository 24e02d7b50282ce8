"""``frontier``: the privacy-utility frontier of the conventional desensitizers and the learned variants."""
from __future__ import annotations

import argparse

from .common import add_config_args


def add_parsers(sub) -> None:
    from torchreid_privacy.studies.frontier import DEFAULT_VARIANTS, LEARNED_VARIANTS

    p = sub.add_parser("frontier", help="sweep the conventional desensitizers' strengths and the learned variants over "
                                        "seeds; P as published; writes frontier.json/.csv/.png")
    add_config_args(p)
    p.add_argument("--output", required=True, help="a new (or empty) folder for the runs and the frontier files")
    p.add_argument("--seeds", type=int, default=3, help="seeds per point (default 3: mean and sd)")
    p.add_argument("--quick", action="store_true", help="one seed, mosaic 24 and blur 12, the learned-mosaic variant, "
                                                        "short attacks (for tests and a first look)")
    p.add_argument("--conventional", help="comma-separated conventional points FAMILY-STRENGTH, strengths at 256x128 "
                                          "(e.g. mosaic-16,mosaic-24,blur-12; default mosaic-8,16,24,32, blur-8,16 and "
                                          "noise-0.3; mosaic-24 is the yardstick of the paired intervals)")
    p.add_argument("--variants", help=f"comma-separated learned variants of {', '.join(LEARNED_VARIANTS)} (default "
                                      f"{', '.join(DEFAULT_VARIANTS)})")
    p.add_argument("--dataset", help="train and test on this torchreid dataset (e.g. synthetic_market_hard) instead of "
                                     "the config's data.sources/targets")
    p.add_argument("--data-root", help="data.root (default: OUTPUT/data; the synthetic sets are generated there)")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs trained at once, each on cores/jobs threads (default 1: on 2 cores two 1-thread "
                        "runs train 0.76-0.82x as fast as one 2-thread run, measured)")
    p.add_argument("--resume", action="store_true",
                   help="finish a sweep that stopped: reuse the finished jobs in OUTPUT (the same arguments and "
                        "config file content required)")
    p.set_defaults(func=frontier)


def frontier(args: argparse.Namespace) -> int:
    from torchreid_privacy.studies.frontier import format_frontier, run_frontier

    variants = [v for v in args.variants.split(",") if v] if args.variants else None
    conventional = [c for c in args.conventional.split(",") if c] if args.conventional is not None else None
    result = run_frontier(args.config_file, args.output, seeds=args.seeds, overrides=args.opts, quick=args.quick,
                          variants=variants, jobs=args.jobs, dataset=args.dataset, data_root=args.data_root,
                          resume=args.resume, conventional=conventional)
    print(format_frontier(result))
    print(f"frontier: {args.output}/frontier.json, frontier.csv, frontier.png")
    return 0
