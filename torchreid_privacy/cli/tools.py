"""``demo``, ``list``, ``make-data``, ``split`` and ``bench``."""
from __future__ import annotations

import argparse

from .common import add_config_args, add_video_detection_args, int_list


def add_parsers(sub) -> None:
    from torchreid_privacy.studies.demo import ATTACK_PAIRS, ATTACK_STEPS, DEFAULT_MODES, MODES, THIRD_PARTY_EPOCHS

    p = sub.add_parser("demo", help="make the embedded dataset, train baseline/progressive/learned-mosaic (the shipped "
                                    "sealed config), attack the sealed run and M, check sealed recovery, print the "
                                    "tables")
    p.add_argument("--output", default="demo-output", help="run folder (default: demo-output)")
    p.add_argument("--data-root", help="where the synthetic dataset lives (default: OUTPUT/data, made with 100 queries; "
                                       "a set already there is used as it is)")
    p.add_argument("--modes", default=",".join(DEFAULT_MODES), help=f"comma-separated, of {', '.join(MODES)}")
    p.add_argument("--no-attacks", action="store_true", help="skip the third-party ReID and inversion attacks")
    p.add_argument("--no-views", action="store_true", help="skip the rank-list / t-SNE views")
    p.add_argument("--attack-pairs", default=",".join(map(str, ATTACK_PAIRS)),
                   help="leaked pair counts of the inversion attack")
    p.add_argument("--attack-steps", type=int, default=ATTACK_STEPS, help="inversion attacker training steps")
    p.add_argument("--third-party-epochs", type=int, default=THIRD_PARTY_EPOCHS,
                   help=f"training epochs of the raw-trained third-party ReID model (default {THIRD_PARTY_EPOCHS})")
    add_config_args(p)
    p.set_defaults(func=demo)

    p = sub.add_parser("list", help="print every registered component by kind")
    p.set_defaults(func=list_components)

    p = sub.add_parser("bench", help="benchmarks: `bench kernels` checks and times every Triton kernel (GPU); "
                                     "`bench step` times the whole training step (eager, compile, Triton, AMP); "
                                     "`bench scale` times evaluation and search at MSMT17 size and a million images; "
                                     "`bench video` measures each video detector's privacy recall and speed")
    p.add_argument("what", choices=["kernels", "step", "scale", "video"])
    p.add_argument("args", nargs=argparse.REMAINDER, help="passed to the benchmark (see --help after 'kernels' "
                                                          "or 'step')")
    p.set_defaults(func=bench)

    p = sub.add_parser("make-data", help="write a Market-1501-layout dataset: the synthetic one (--root), one made "
                                         "from a video (--from-video), or a generated street video (--synthetic-video)")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--root", help="write the synthetic Market-1501 set under ROOT")
    mode.add_argument("--from-video", metavar="VIDEO", help="detect, track and crop the people of VIDEO into a "
                                                            "new dataset folder --output")
    mode.add_argument("--synthetic-video", metavar="PATH", help="write a generated street video at PATH (.mkv: "
                                                                "lossless) with its <stem>.gt.txt and <stem>.det.txt")
    p.add_argument("--seed", type=int, default=0, help="generator seed, or the video set's train/test split seed")
    p.add_argument("--ids", type=int, help="--root: number of identities, half for training, half for test "
                   "(default: the generator's 100)")
    p.add_argument("--extra-test-ids", type=int, help="--root: test-only identities added to --ids (default: "
                   "the embedded set's 200, for 500 queries; 0 = none)")
    p.add_argument("--style", choices=["plain", "hard"],
                   help="--root: plain (default): flat cartoon figures (ROOT/market1501); hard: textured clothing, "
                        "clutter, occlusion, strong camera nuisances (ROOT/market1501_hard). --synthetic-video: "
                        "plain (default): flat cartoon walkers of similar size; hard: a street in perspective "
                        "(people 7-35%% of the frame height), people standing still, groups occluding each other, "
                        "textured people, street furniture, brightness drift and sensor noise (gt.txt with "
                        "visibilities)")
    p.add_argument("--output", metavar="DIR", help="--from-video: the new dataset folder (must not exist, or be empty)")
    add_video_detection_args(p, "--from-video")
    p.add_argument("--ground-truth", metavar="GT.txt", help="--from-video: MOT gt.txt, to measure the tracklets' "
                                                            "purity and coverage and the detector's privacy recall")
    p.add_argument("--every", type=int, help="--from-video: keep crops from every N-th frame (default 1)")
    p.add_argument("--min-height", type=int, metavar="PX", help="--from-video: smallest crop height (default 64)")
    p.add_argument("--min-images", type=int, metavar="N", help="--from-video: fewest crops an identity needs "
                                                               "(default 8, at least 2 x --segments)")
    p.add_argument("--segments", type=int, metavar="K", help="--from-video: time parts of each identity, labelled "
                                                             "cameras c1..cK (default 2)")
    p.add_argument("--test-ratio", type=float, help="--from-video: share of identities in the test set (default 0.5)")
    p.add_argument("--frames", type=int, help="--synthetic-video: number of frames (default 80)")
    p.add_argument("--people", type=int, help="--synthetic-video: number of walkers (default 6)")
    p.add_argument("--size", type=frame_size, metavar="WxH",
                   help="--synthetic-video: frame size (default 320x240; the video benchmark's street is 768x576)")
    p.set_defaults(func=make_data)

    p = sub.add_parser("split", help="identity-disjoint train/val split of a torchreid dataset's train set")
    p.add_argument("--dataset", required=True, help="torchreid dataset name, e.g. market1501")
    p.add_argument("--root", required=True)
    p.add_argument("--output", required=True, help="JSON file to write (never overwritten)")
    p.add_argument("--val-ratio", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0, help="split seed (privacy.split_seed)")
    p.set_defaults(func=split)


def demo(args: argparse.Namespace) -> int:
    from torchreid_privacy.studies.demo import run_demo

    run_demo(args.output, data_root=args.data_root, modes=[m for m in args.modes.split(",") if m],
             config_file=args.config_file, overrides=args.opts, attacks=not args.no_attacks,
             attack_pairs=int_list("--attack-pairs", args.attack_pairs), attack_steps=args.attack_steps,
             views=not args.no_views, third_party_epochs=args.third_party_epochs)
    return 0


def list_components(args: argparse.Namespace) -> int:
    from torchreid_privacy import bridge
    from torchreid_privacy.registry import ALL_REGISTRIES

    for kind, reg in ALL_REGISTRIES.items():
        print(f"{kind}: {', '.join(reg.names())}")
    print(f"torchreid models: {', '.join(bridge.available_models())}")
    print(f"torchreid datasets: {', '.join(bridge.available_datasets())}")
    return 0


# make-data flags by mode (``--seed`` serves all three)
MAKE_DATA_FLAGS = {
    "root": ("ids", "extra_test_ids", "style"),
    "from_video": ("output", "detections", "ground_truth", "every", "min_height", "min_images", "segments",
                   "test_ratio", "detector", "detector_threshold", "detector_weights", "hog_min_height",
                   "skip_bad_boxes"),
    "synthetic_video": ("frames", "people", "style", "size"),
}


def frame_size(text: str) -> tuple:
    """``768x576`` -> (768, 576); argparse names the flag when this raises."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and 32 <= int(p) <= 8192 for p in parts):
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, each 32 to 8192 pixels, got {text!r}")
    return int(parts[0]), int(parts[1])


def make_data(args: argparse.Namespace) -> int:
    mode = next(m for m in MAKE_DATA_FLAGS if getattr(args, m) is not None)
    for other, flags in MAKE_DATA_FLAGS.items():
        for flag in flags:
            if other != mode and flag not in MAKE_DATA_FLAGS[mode] and getattr(args, flag) is not None:
                raise ValueError(f"--{flag.replace('_', '-')}: only with --{other.replace('_', '-')}, "
                                 f"not --{mode.replace('_', '-')}")
    return {"root": _make_market, "from_video": _make_from_video, "synthetic_video": _make_video}[mode](args)


def _make_market(args: argparse.Namespace) -> int:
    from torchreid_privacy.data.synthetic import make_synthetic_market

    style = args.style or "plain"
    kwargs = {"seed": args.seed, "style": style}
    if args.ids is not None:
        kwargs["num_ids"] = args.ids
    if args.extra_test_ids is not None:
        kwargs["extra_test_ids"] = args.extra_test_ids
    print(f"synthetic Market-1501 layout ({style} style) at {make_synthetic_market(args.root, **kwargs)}")
    return 0


def _make_video(args: argparse.Namespace) -> int:
    from torchreid_privacy.video.synthetic import make_synthetic_video

    kwargs = {k: getattr(args, k) for k in MAKE_DATA_FLAGS["synthetic_video"] if getattr(args, k) is not None}
    if "size" in kwargs:
        kwargs["width"], kwargs["height"] = kwargs.pop("size")
    made = make_synthetic_video(args.synthetic_video, seed=args.seed, **kwargs)
    print(f"video: {made.path} ({made.frames} frames, {made.people} people, {made.boxes} boxes, "
          f"{args.style or 'plain'} style)")
    print(f"ground truth: {made.gt_path}")
    print(f"detections: {made.det_path}")
    return 0


def _make_from_video(args: argparse.Namespace) -> int:
    from torchreid_privacy.video.to_dataset import video_to_dataset

    if args.output is None:
        raise ValueError("--output: required with --from-video (the new dataset folder)")
    options = {"threshold": args.detector_threshold, "weights": args.detector_weights,
               "skip_bad_boxes": bool(args.skip_bad_boxes), "hog_min_height": args.hog_min_height}
    kwargs = {k: getattr(args, k) for k in MAKE_DATA_FLAGS["from_video"]
              if k not in ("output", "detector_threshold", "detector_weights", "skip_bad_boxes", "hog_min_height")
              and getattr(args, k) is not None}
    report = video_to_dataset(args.from_video, args.output, seed=args.seed, detector_options=options, **kwargs)
    c = report.counts
    print(f"ReID set from {args.from_video} at {report.output}: {c['tracklets_kept']} identities "
          f"({c['train_identities']} train, {c['query_identities']} test), {c['boxes_kept']} crops "
          f"({c['train_images']} train, {c['query_images']} query, {c['gallery_images']} gallery)")
    print(f"{c['frames_read']} frames ({report.frames_per_second:.1f} frames/s), {c['boxes_detected']} boxes "
          f"detected, {c['tracklets_found']} tracklets, {c['tracklets_dropped']} dropped as too short")
    if report.tracking:
        t = report.tracking
        print(f"tracklets vs ground truth: purity {t['purity']:.3f}, coverage {t['coverage']:.3f}, "
              f"precision {t['precision']:.3f}, {t['id_switches']} id switches")
        from torchreid_privacy.video.privacy_recall import summary_line

        print(f"detector {summary_line(t['privacy_recall'])} (its boxes, before temporal filling)")
    print(f"details: {report.json_path}")
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
        from torchreid_privacy.bench import step as bench_step

        return bench_step.main(args.args)
    if args.what == "scale":
        from torchreid_privacy.bench import scale as bench_scale

        return bench_scale.main(args.args)
    if args.what == "video":
        from torchreid_privacy.bench import video as bench_video

        return bench_video.main(args.args)
    from torchreid_privacy.bench import kernels as bench_module

    return bench_module.main(args.args)
