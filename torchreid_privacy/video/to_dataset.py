"""A Market-1501-layout ReID set made from one video: people detected, linked into tracklets, cropped.

Why: a user's own footage is the data a privacy-preserving ReID model is meant for; this turns
it into the layout every torchreid tool reads (``data.sources ['folder:DIR']``) in one command.

How: every frame is decoded and searched for people (OpenCV's HOG, or a MOTChallenge
``det.txt``), the boxes are linked into tracklets (:class:`.tracklets.TrackLinker`), and each
tracklet long enough becomes one identity (pids 1..n in order of appearance). Tracking uses
every frame (identities survive occlusions better); crops are kept from every ``every``-th
frame only (consecutive frames are near duplicates).

Cameras from time: each identity's crops are cut in time into ``segments`` consecutive parts,
part k labelled camera ``c{k}``. One video has one camera, but torchreid's Market protocol only
counts a query's matches on another camera; cutting in time turns one video into the
across-time protocol (find the person again minutes later, in another pose and place), the one
a single camera offers. Test identities give one query per camera (the middle crop of the
segment, Market-1501's one-query-per-camera habit); the rest is their gallery. Train and test
identities are disjoint, drawn reproducibly from ``seed`` and ``test_ratio``.

Names are Market-1501's: ``{pid:04d}_c{cam}s1_{frame:06d}_{k:02d}.jpg`` (frame 0-based as
:func:`.io.read_frames` counts it, ``k`` the box's row among that frame's detections). Beside
the three folders: ``dataset.json`` (source, settings, counts, tracking quality against a
ground truth when given) and ``boxes.txt`` (every crop's box, MOT gt.txt form, id = pid).
Everything is written into a hidden folder beside ``output`` and renamed into place at the end:
a failed run leaves no half-made dataset and never touches an existing one.

Usage::

    from torchreid_privacy.video.to_dataset import video_to_dataset
    report = video_to_dataset("street.mp4", "street-reid", detections="street.det.txt")
"""
from __future__ import annotations

import contextlib
import io
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Optional, Tuple, Union

import numpy as np
from PIL import Image

from torchreid_privacy.utils.atomic import check_new_folder, new_folder, write_json, write_new

from .detectors import Detector
from .io import VideoInfo, probe, read_frames
from .plan import prime_detectors, read_ground_truth, video_detector, warn_outside
from .privacy_recall import PrivacyRecall, box_mask
from .mot import TRACK, pixel_boxes, read_mot, tracks_of, write_mot
from .tracklets import TrackLinker, evaluate_tracklets

PathLike = Union[str, os.PathLike]
SPLIT_DIRS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
JPEG_QUALITY = 95
MAX_SEGMENTS = 9  # Market-1501 names carry the camera as one digit: ``c(\d)``

Box = Tuple[int, int, int, int]


@dataclass(frozen=True)
class Crop:
    frame: int
    row: int  # the box's row among its frame's detections
    box: Box  # x1, y1, x2, y2 in integer pixels, inside the frame


@dataclass
class Identity:
    pid: int
    tracklet: int
    crops: List[Crop]  # the kept crops, in time order
    tracked: List[Tuple[int, np.ndarray]]  # every tracked (frame, xyxy) of the tracklet
    split: str = "train"


@dataclass(frozen=True)
class VideoDatasetReport:
    output: Path
    json_path: Path
    counts: Dict[str, int]
    tracking: Optional[Dict[str, float]]  # evaluate_tracklets of the kept tracklets, with a ground truth
    seconds: float

    @property
    def frames_per_second(self) -> float:
        return self.counts["frames_read"] / self.seconds if self.seconds > 0 else 0.0


def video_to_dataset(video: PathLike, output: PathLike, detections: Optional[PathLike] = None, every: int = 1,
                     min_height: int = 64, min_images: int = 8, segments: int = 2, test_ratio: float = 0.5,
                     seed: int = 0, ground_truth: Optional[PathLike] = None, detector: Optional[str] = None,
                     detector_options: Optional[dict] = None, lost_frames: Optional[int] = None,
                     progress: bool = True) -> VideoDatasetReport:
    """Write the ReID set of ``video`` under the new folder ``output`` (see the module docstring).

    ``detections``: a MOT det.txt for the video (an alias of ``detector="file:PATH"``);
    ``detector``: a detector spec (:func:`.detectors.build_detector`, default the package's),
    ``detector_options`` its keyword arguments; ``min_height``: smallest crop height in pixels;
    ``min_images``: fewest crops an identity needs; ``ground_truth``: a MOT gt.txt, to measure the
    tracklets and the detector's privacy recall (the people its boxes cover, as ``anonymize`` with
    the same detector would hide them before temporal filling); ``lost_frames``:
    :class:`.tracklets.TrackLinker`'s (default: one second).
    Every refusal (bad value, existing output, unreadable video, no person, too few
    tracklets) happens before anything is written.
    """
    start = time.perf_counter()
    _check_settings(every, min_height, min_images, segments, test_ratio)
    output = check_new_folder(output, "--output")
    info = probe(video)
    detector = video_detector(detections, detector, **(detector_options or {}))
    truth = _read_ground_truth(ground_truth) if ground_truth else None
    recall = PrivacyRecall(read_ground_truth(ground_truth), info.width, info.height) if ground_truth else None
    linker = TrackLinker(float(info.fps), lost_frames=lost_frames)
    prime_detectors([detector], video, info)
    tracked, counts = _track(video, info, detector, linker, progress, recall)
    counts["boxes_outside"] = int(getattr(detector, "outside", 0))  # a MOT file's boxes with no pixel in the frame
    warn_outside(counts["boxes_outside"], info.width, info.height)
    if counts["boxes_detected"] == 0:
        raise ValueError(_no_person(video, detector, counts["frames_read"]))
    identities, counts["boxes_too_small"] = _identities(tracked, info, every, min_height, min_images)
    counts.update(tracklets_found=len(tracked), tracklets_kept=len(identities),
                  tracklets_dropped=len(tracked) - len(identities))
    if len(identities) < 2:
        raise ValueError(f"{video}: too few tracklets for a train/test split: {len(identities)} kept of "
                         f"{len(tracked)} found (2 needed; a tracklet needs --min-images {min_images} crops "
                         f"of >= --min-height {min_height} px from every --every {every} frame); lower "
                         f"--min-images or --min-height, or use a longer video")
    _split(identities, test_ratio, seed)
    plan = _plan(identities, segments)
    counts.update(_split_counts(plan))
    tracking = evaluate_tracklets({i.tracklet: i.tracked for i in identities}, truth) if truth else None
    if recall is not None:
        tracking["privacy_recall"] = {k: v for k, v in recall.report().items() if k != "missed_boxes"}
    with new_folder(output, "--output") as folder:
        _write_crops(video, info, plan, folder, progress)
        write_mot(folder / "boxes.txt", _boxes_by_frame(plan), gt=True)
        seconds = time.perf_counter() - start
        record = _record(video, info, detector, linker, counts, tracking, identities, seconds,
                         dict(every=every, min_height=min_height, min_images=min_images, segments=segments,
                              test_ratio=test_ratio, seed=seed, ground_truth=_abs(ground_truth)))
        write_json(folder / "dataset.json", record)
    return VideoDatasetReport(output, output / "dataset.json", counts, tracking, seconds)


def _check_settings(every: int, min_height: int, min_images: int, segments: int, test_ratio: float) -> None:
    if int(every) != every or every < 1:
        raise ValueError(f"--every: must be an integer >= 1 (keep crops from every N-th frame), got {every}")
    if not 2 <= segments <= MAX_SEGMENTS or int(segments) != segments:
        raise ValueError(f"--segments: must be an integer in [2, {MAX_SEGMENTS}] (time parts labelled as "
                         f"cameras c1..cK; Market names hold one digit), got {segments}")
    if min_height < 1:
        raise ValueError(f"--min-height: must be >= 1 pixel, got {min_height}")
    if int(min_images) != min_images or min_images < 2 * segments:
        raise ValueError(f"--min-images: must be an integer >= 2 x --segments = {2 * segments} (each camera "
                         f"segment of a test identity needs a query and a gallery crop), got {min_images}")
    if not 0.0 < test_ratio < 1.0:
        raise ValueError(f"--test-ratio: must be in (0, 1), got {test_ratio}")


def _read_ground_truth(path: PathLike) -> Dict[int, Dict[int, np.ndarray]]:
    truth = tracks_of(read_mot(path))
    if not truth:
        raise ValueError(f"--ground-truth: {path} holds no track id (a gt.txt has ids >= 0; is it a det.txt?)")
    return truth


def _no_person(video: PathLike, detector: Detector, frames: int) -> str:
    settings = ", ".join(f"{k} {v}" for k, v in detector.settings().items())
    if not detector.name.startswith("file"):
        return (f"no person detected in {video} (detector {detector.name}: {settings}; {frames} frames); pass "
                f"--detections det.txt, or another --detector, or a lower --detector-threshold")
    return (f"no person detected in {video} (detector {detector.name}: {settings}): none of its boxes falls "
            f"on the video's {frames} frames; pass the --detections file made for this video")


def _frames(video: PathLike, info: VideoInfo, desc: str, progress: bool) -> Iterator[Tuple[int, np.ndarray]]:
    from tqdm import tqdm

    with contextlib.closing(read_frames(video)) as frames:
        yield from enumerate(tqdm(frames, total=info.frames or None, desc=desc, unit="frame",
                                  disable=not progress, leave=False))


def _track(video: PathLike, info: VideoInfo, detector: Detector, linker: TrackLinker, progress: bool,
           recall: Optional[PrivacyRecall] = None) -> Tuple[Dict[int, List[Tuple[int, int, np.ndarray]]], Dict[str, int]]:
    """``{tracklet: [(frame, row, xyxy)]}`` of the whole video, and the frame and box counts; with
    ``recall``, each frame's ground-truth people scored against the detected boxes."""
    tracked: Dict[int, List[Tuple[int, int, np.ndarray]]] = {}
    frames = boxes = 0
    for index, rgb in _frames(video, info, "detect + track", progress):
        found = np.asarray(detector(index, rgb), dtype=np.float64).reshape(-1, 6)
        boxes += len(found)
        if recall is not None:
            recall.add(index, box_mask(pixel_boxes(found, info.width, info.height), info.height, info.width))
        for row, det in enumerate(linker.update(index, found)):
            if det[TRACK] >= 1:
                tracked.setdefault(int(det[TRACK]), []).append((index, row, det[:4].copy()))
        frames += 1
    n_tracked = sum(len(t) for t in tracked.values())
    return tracked, {"frames_read": frames, "boxes_detected": boxes, "boxes_tracked": n_tracked}


def _identities(tracked: Dict[int, List[Tuple[int, int, np.ndarray]]], info: VideoInfo, every: int,
                min_height: int, min_images: int) -> Tuple[List[Identity], int]:
    """The tracklets with >= ``min_images`` crops (tall enough, every ``every``-th frame) as identities
    numbered 1..n by first appearance, and how many boxes were too small."""
    kept, too_small = [], 0
    for tid in sorted(tracked, key=lambda t: (tracked[t][0][0], t)):
        crops = []
        boxes = pixel_boxes(np.stack([xyxy for _, _, xyxy in tracked[tid]]), info.width, info.height)
        for (frame, row, _), box in zip(tracked[tid], boxes.tolist()):
            if box[3] - box[1] < min_height or box[2] <= box[0]:
                too_small += 1
            elif frame % every == 0:
                crops.append(Crop(frame, row, tuple(box)))
        if len(crops) >= min_images:
            kept.append(Identity(len(kept) + 1, tid, crops, [(f, b) for f, _, b in tracked[tid]]))
    return kept, too_small


def _split(identities: List[Identity], test_ratio: float, seed: int) -> None:
    """Mark a reproducible ``test_ratio`` share of the identities (at least one, never all) as test."""
    n_test = min(len(identities) - 1, max(1, round(len(identities) * test_ratio)))
    for i in np.random.default_rng(seed).permutation(len(identities))[:n_test]:
        identities[i].split = "test"


class Planned(NamedTuple):
    folder: str  # split folder
    name: str
    pid: int
    crop: Crop


Plan = Dict[int, List[Planned]]  # frame -> its crops


def _plan(identities: List[Identity], segments: int) -> Plan:
    """Every crop's folder and name: cameras from time segments, one query per test camera."""
    plan: Plan = {}
    for ident in identities:
        for cam, part in enumerate(np.array_split(np.arange(len(ident.crops)), segments), 1):
            query = part[len(part) // 2] if ident.split == "test" else -1
            for i in part:
                crop = ident.crops[i]
                folder = SPLIT_DIRS["train" if ident.split == "train" else "query" if i == query else "gallery"]
                name = f"{ident.pid:04d}_c{cam}s1_{crop.frame:06d}_{crop.row:02d}.jpg"
                plan.setdefault(crop.frame, []).append(Planned(folder, name, ident.pid, crop))
    return plan


def _split_counts(plan: Plan) -> Dict[str, int]:
    counts = {"boxes_kept": sum(len(v) for v in plan.values())}
    for split, folder in SPLIT_DIRS.items():
        pids = [p.pid for entries in plan.values() for p in entries if p.folder == folder]
        counts[f"{split}_images"], counts[f"{split}_identities"] = len(pids), len(set(pids))
    return counts


def _jpeg(rgb: np.ndarray) -> bytes:
    """Quality 95 with full-resolution colour (4:4:4): clothing colour is much of what ReID sees."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    return buf.getvalue()


def _write_crops(video: PathLike, info: VideoInfo, plan: Plan, folder: Path, progress: bool) -> None:
    """Decode the video again and save each planned crop (the frames are not held in memory)."""
    last = max(plan)
    with contextlib.closing(_frames(video, info, "crop", progress)) as frames:
        for index, rgb in frames:
            for p in plan.get(index, ()):
                x1, y1, x2, y2 = p.crop.box
                write_new(folder / p.folder / p.name, _jpeg(rgb[y1:y2, x1:x2]))
            if index >= last:
                break
    for split_dir in SPLIT_DIRS.values():  # a split with no image still exists, as torchreid expects
        (folder / split_dir).mkdir(exist_ok=True)


def _boxes_by_frame(plan: Plan) -> Dict[int, np.ndarray]:
    return {frame: np.asarray([(*p.crop.box, 1.0, p.pid) for p in entries], dtype=np.float64)
            for frame, entries in plan.items()}


def _abs(path: Optional[PathLike]) -> Optional[str]:
    return str(Path(path).absolute()) if path else None


def _record(video: PathLike, info: VideoInfo, detector: Detector, linker: TrackLinker, counts: Dict[str, int],
            tracking: Optional[dict], identities: List[Identity], seconds: float, settings: dict) -> dict:
    return {
        "format": "market1501",
        "cameras": "time segments of one video: camera k is the k-th consecutive part of each identity's crops",
        "source": {"video": _abs(video), "width": info.width, "height": info.height, "fps": float(info.fps),
                   "frames": counts["frames_read"], "frames_stated": info.frames},
        "detector": {"name": detector.name, "settings": detector.settings()},
        "tracker": linker.settings(),
        "settings": settings,
        "counts": counts,
        "tracking": tracking,
        "seconds": round(seconds, 3),
        "frames_per_second": round(counts["frames_read"] / seconds, 2) if seconds > 0 else None,
        "identities": [{"pid": i.pid, "split": i.split, "tracklet": i.tracklet, "images": len(i.crops),
                        "first_frame": i.crops[0].frame, "last_frame": i.crops[-1].frame} for i in identities],
    }
