"""``torchreid-privacy bench video``: each detector's privacy recall and speed on the generated hard street.

Why without a model: what ``anonymize --input VIDEO`` hides is decided by its first pass
(:func:`torchreid_privacy.video.plan.plan_video`: detect, track, fill, widen, fail closed); the
second pass only replaces the planned pixels. So a detector's privacy recall is measured from
the plan's masks against the street's gt.txt, exactly as ``anonymize --ground-truth`` reports it,
without training anything. Each row: detection frames/s (the first pass alone, decoding included)
and privacy recall with the temporal defaults and with none (``--max-gap 0 --extend 0
--box-margin 0``), the worst frame of the first. ``--sweep`` adds rows for the temporal settings
(the defaults were chosen from it).

Usage::

    torchreid-privacy bench video                                    # 768x576, 150 frames, default list
    torchreid-privacy bench video --detectors hog,motion,motion+hog --frames 60 --output video.json
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Sequence

from torchreid_privacy.video.detectors import DEFAULT_DETECTOR, DEFAULT_OPTIONS, build_detector
from torchreid_privacy.video.detectors.build import parse_spec
from torchreid_privacy.video.io import probe
from torchreid_privacy.video.plan import plan_video
from torchreid_privacy.video.privacy_recall import PrivacyRecall
from torchreid_privacy.video.synthetic import make_synthetic_video
from torchreid_privacy.video.mot import read_mot
from torchreid_privacy.video.temporal import TemporalSettings

DETECTORS = ("motion", "hog", DEFAULT_DETECTOR, "file:{det}")
NONE = TemporalSettings(max_gap=0, extend=0, margin=0.0)
SWEEP = [TemporalSettings(max_gap=g, extend=e, margin=m) for g, e, m in
         ((0, 0, 0.05), (0, 0, 0.1), (0, 0, 0.15), (12, 0, 0.0), (12, 4, 0.0), (12, 4, 0.1), (25, 8, 0.1),
          (12, 4, 0.15))]


def recall_of(path: Path, gt: Path, spec: str, temporal: TemporalSettings, fail_closed: bool = False,
              options: Optional[dict] = None) -> dict:
    """Privacy recall and detection speed of one detector spec on one video."""
    info = probe(path)
    names = {n for n, _ in parse_spec(spec)}
    base = DEFAULT_OPTIONS if spec == DEFAULT_DETECTOR and not options else {}
    options = {k: v for k, v in (options or base).items() if k in names}
    detector = build_detector(spec, **options)
    start = time.perf_counter()
    plan = plan_video(path, info, detector, temporal, fail_closed=fail_closed, progress=False)
    seconds = time.perf_counter() - start
    recall = PrivacyRecall(read_mot(gt, evaluation=False), info.width, info.height)
    hidden_pixels = 0  # the share of all pixels the plan anonymizes: the price of the recall (1.0 hides everything)
    for index in range(plan.frames):
        mask = plan.mask(index, info.height, info.width)
        recall.add(index, mask)
        hidden_pixels += int(mask.sum())
    report = recall.report()
    return {"detector": spec, "options": options, "temporal": temporal.as_dict(), "fail_closed": fail_closed,
            "frames_per_second": plan.frames / seconds, "recall": report["recall"], "people": report["people"],
            "hidden": report["hidden"], "worst_frame": report["worst_frame"], "frames_whole": plan.counts["frames_whole"],
            "boxes": plan.counts["boxes"], "pixels_anonymized": hidden_pixels / (plan.frames * info.height * info.width)}


def _table(rows: List[dict]) -> str:
    head = "| detector | gap/extend/margin | fail-closed | frames/s | recall | worst frame | pixels hidden |"
    lines = [head, "|" + "---|" * 7]
    for r in rows:
        t = r["temporal"]
        w = r["worst_frame"] or {}
        opts = "".join(f" {k}{v}" for k, v in (r.get("options") or {}).items())
        lines.append(f"| {r['detector']}{opts} | {t['max_gap']}/{t['extend']}/{t['margin']} | {'yes' if r['fail_closed'] else 'no'} "
                     f"| {r['frames_per_second']:.1f} | {r['recall']:.3f} ({r['hidden']}/{r['people']}) "
                     f"| {w.get('frame', '-')}: {w.get('hidden', '-')}/{w.get('people', '-')} "
                     f"| {r['pixels_anonymized']:.3f} |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="torchreid-privacy bench video", description=__doc__.split("\n\n")[0])
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--height", type=int, default=576)
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--people", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--detectors", default=",".join(DETECTORS),
                    help=f"comma-separated specs; {{det}} is the street's own noisy det.txt (default detector: "
                         f"{DEFAULT_DETECTOR})")
    ap.add_argument("--sweep", action="store_true", help="also sweep the temporal settings for each detector")
    ap.add_argument("--fail-closed", action="store_true", help="also a --fail-closed row for each detector")
    ap.add_argument("--options", type=json.loads, default={},
                    help='detector options as JSON, by name: \'{"hog": {"min_height": 80}}\'')
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--output", help="JSON file with every row")
    args = ap.parse_args(argv)
    import cv2
    import torch

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        made = make_synthetic_video(Path(tmp) / "street.mkv", frames=args.frames, width=args.width,
                                    height=args.height, people=args.people, seed=args.seed, style="hard")
        print(f"hard street {args.width}x{args.height}, {made.frames} frames, {made.people} people, "
              f"{made.boxes} boxes ({time.perf_counter() - start:.0f} s to render)", flush=True)
        rows: List[dict] = []
        for spec in args.detectors.split(","):
            spec = spec.format(det=made.det_path)
            settings = [TemporalSettings(), NONE] + (SWEEP if args.sweep else [])
            for temporal in settings:
                rows.append(recall_of(made.path, made.gt_path, spec, temporal, options=args.options))
                print(_table(rows[-1:]).splitlines()[-1], flush=True)
            if args.fail_closed:
                rows.append(recall_of(made.path, made.gt_path, spec, TemporalSettings(), fail_closed=True,
                                      options=args.options))
                print(_table(rows[-1:]).splitlines()[-1], flush=True)
    for r in rows:
        r["detector"] = r["detector"].replace(str(made.det_path), "street.det.txt")
    print()
    print(_table(rows))
    if args.output:
        from torchreid_privacy.utils.atomic import write_json

        write_json(args.output, {"video": {"width": args.width, "height": args.height, "frames": args.frames,
                                           "people": made.people, "boxes": made.boxes, "seed": args.seed},
                                 "rows": rows})
    return 0

