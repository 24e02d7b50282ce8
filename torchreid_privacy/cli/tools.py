"""``demo``, ``list``, ``make-data``, ``split`` and ``bench``."""
from __future__ import annotations

import argparse

from .common import add_config_args, int_list


def add_parsers(sub) -> None:
    from torchreid_privacy.tools.demo import ATTACK_PAIRS, ATTACK_STEPS, DEFAULT_MODES, MODES

    p = sub.add_parser("demo", help="make the embedded dataset, train baseline/joint/progressive/progressive-sealed, "
                                    "attack the sealed run and M, check sealed recovery, print the tables")
    p.add_argument("--output", default="demo-output", help="run folder (default: demo-output)")
    p.add_argument("--data-root", help="where the synthetic dataset lives (default: OUTPUT/data)")
    p.add_argument("--modes", default=",".join(DEFAULT_MODES), help=f"comma-separated, of {', '.join(MODES)}")
    p.add_argument("--no-attacks", action="store_true", help="skip the third-party ReID and inversion attacks")
    p.add_argument("--no-views", action="store_true", help="skip the rank-list / t-SNE views")
    p.add_argument("--attack-pairs", default=",".join(map(str, ATTACK_PAIRS)),
                   help="leaked pair counts of the inversion attack")
    p.add_argument("--attack-steps", type=int, default=ATTACK_STEPS, help="inversion attacker training steps")
    add_config_args(p)
    p.set_defaults(func=demo)

    p = sub.add_parser("list", help="print every registered component by kind")
    p.set_defaults(func=list_components)

    p = sub.add_parser("bench", help="benchmarks: `bench kernels` checks and times every Triton kernel (GPU); "
                                     "`bench step` times the whole training step (eager, compile, Triton, AMP); "
                                     "`bench scale` times evaluation and search at MSMT17 size and a million images")
    p.add_argument("what", choices=["kernels", "step", "scale"])
    p.add_argument("args", nargs=argparse.REMAINDER, help="passed to the benchmark (see --help after 'kernels' "
                                                          "or 'step')")
    p.set_defaults(func=bench)

    p = sub.add_parser("make-data", help="write the synthetic Market-1501-layout dataset")
    p.add_argument("--root", required=True)
    p.add_argument("--ids", type=int, default=None, help="number of identities (default: the generator's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--style", choices=["plain", "hard"], default="plain",
                   help="plain: flat cartoon figures (ROOT/market1501); hard: textured clothing, clutter, "
                        "occlusion, strong camera nuisances (ROOT/market1501_hard)")
    p.set_defaults(func=make_data)

    p = sub.add_parser("split", help="identity-disjoint train/val split of a torchreid dataset's train set")
    p.add_argument("--dataset", required=True, help="torchreid dataset name, e.g. market1501")
    p.add_argument("--root", required=True)
    p.add_argument("--output", required=True, help="JSON file to write (never overwritten)")
    p.add_argument("--val-ratio", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0, help="split seed (privacy.split_seed)")
    p.set_defaults(func=split)


def demo(args: argparse.Namespace) -> int:
    from torchreid_privacy.tools.demo import run_demo

    run_demo(args.output, data_root=args.data_root, modes=[m for m in args.modes.split(",") if m],
             config_file=args.config_file, overrides=args.opts, attacks=not args.no_attacks,
             attack_pairs=int_list("--attack-pairs", args.attack_pairs), attack_steps=args.attack_steps,
             views=not args.no_views)
    return 0


def list_components(args: argparse.Namespace) -> int:
    from torchreid_privacy import bridge
    from torchreid_privacy.registry import ALL_REGISTRIES

    for kind, reg in ALL_REGISTRIES.items():
        print(f"{kind}: {', '.join(reg.names())}")
    print(f"torchreid models: {', '.join(bridge.available_models())}")
    print(f"torchreid datasets: {', '.join(bridge.available_datasets())}")
    return 0


def make_data(args: argparse.Namespace) -> int:
    from torchreid_privacy.data.synthetic import make_synthetic_market

    kwargs = {"seed": args.seed, "style": args.style}
    if args.ids is not None:
        kwargs["num_ids"] = args.ids
    print(f"synthetic Market-1501 layout ({args.style} style) at {make_synthetic_market(args.root, **kwargs)}")
    return 0


def split(args: argparse.Namespace) -> int:
    from torchreid_privacy.data.split import write_split
    from torchreid_privacy.data.validate import torchreid_data_errors

    with torchreid_data_errors():
        summary = write_split(args.dataset, args.root, args.output, val_ratio=args.val_ratio, seed=args.seed)
    print(summary if isinstance(summary, str) else f"split written to {args.output}")
    return 0


def bench(args: argparse.Namespace) -> int:
    if args.what == "step":
        from torchreid_privacy.tools import bench_step

        return bench_step.main(args.args)
    if args.what == "scale":
        from torchreid_privacy.tools import bench_scale

        return bench_scale.main(args.args)
    from torchreid_privacy.tools import bench_kernels as bench_module

    return bench_module.main(args.args)
