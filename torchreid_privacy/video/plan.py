"""What to hide in each frame of a video: the first pass of ``anonymize --input VIDEO``.

Why a pass of its own: covering a person through the frames a detector missed needs the
frames after them too (:mod:`.temporal`), so the video is read once to detect and track, the
boxes are filled and widened for the whole video, and a second pass (:mod:`.anonymize`) writes.
Only boxes are kept between the passes, never frames.

Fail closed: a frame whose detector call raises, or returns a box that is not finite, is
planned *whole* (the anonymizer desensitizes every pixel of it) and counted; with
``fail_closed`` a frame whose moving area (background subtraction) is not covered by its boxes
is planned whole too. Boxes reaching outside the frame are clipped and kept; boxes with no pixel
left inside are counted and reported, never dropped in silence.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple, Union

import numpy as np
from tqdm import tqdm

from .detectors import Detector, build_detector
from .io import VideoError, VideoInfo, read_frames
from .mot import TRACK, MotFormatError, pixel_boxes, read_mot
from .privacy_recall import BOX_MIN, box_mask, coverage
from .temporal import TemporalSettings, fill_tracks, is_filled

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
PRIME_FRAMES = 40  # frames sampled across the video for a detector's background model


@dataclass
class FramePlan:
    """One frame's boxes to anonymize (whole pixels inside the frame) or the whole frame."""

    boxes: np.ndarray  # (M, 4) int64 x1, y1, x2, y2
    tracks: np.ndarray  # (M,) int64, -1 untracked
    whole: Optional[str] = None  # why the whole frame is desensitized, None when it is not


EMPTY = FramePlan(np.zeros((0, 4), np.int64), np.zeros(0, np.int64))


@dataclass
class VideoPlan:
    """Every frame's :class:`FramePlan` (frames without a box are absent) and the counts behind it."""

    frames: int
    plans: Dict[int, FramePlan]
    counts: Dict[str, int] = field(default_factory=dict)

    def __getitem__(self, index: int) -> FramePlan:
        return self.plans.get(index, EMPTY)

    def mask(self, index: int, height: int, width: int) -> np.ndarray:
        """The pixels this plan anonymizes on frame ``index``."""
        plan = self[index]
        return box_mask(plan.boxes, height, width, whole=bool(plan.whole))


def video_detector(detections: Optional[PathLike] = None, detector: Optional[str] = None,
                   hog_min_height: Optional[float] = None, **kwargs) -> Detector:
    """The detector of ``--detector SPEC`` (default :data:`.detectors.DEFAULT_DETECTOR` with its
    options), or of ``--detections FILE`` (an alias of ``--detector file:FILE``); ``hog_min_height``
    (``--hog-min-height``) sets the smallest person a ``hog`` part looks for; a MOT file's errors
    are named as the flag's."""
    from .detectors import DEFAULT_DETECTOR, DEFAULT_OPTIONS
    from .detectors.build import parse_spec

    if detections and detector:
        raise ValueError("--detections: an alias of --detector file:FILE; give one of them (combine with "
                         f"--detector 'file:{detections}+hog')")
    flag = "--detections" if detections else "--detector"
    spec = f"file:{detections}" if detections else detector or DEFAULT_DETECTOR
    options = {k: dict(v) for k, v in DEFAULT_OPTIONS.items()} if not (detections or detector) else {}
    if hog_min_height is not None:
        if "hog" not in [name for name, _ in parse_spec(spec)]:
            raise ValueError(f"--hog-min-height: the detector '{spec}' has no hog part")
        options.setdefault("hog", {})["min_height"] = float(hog_min_height)
    try:
        return build_detector(spec, **kwargs, **options)
    except MotFormatError as exc:
        raise ValueError(f"{flag}: {exc}") from None


def read_ground_truth(path: PathLike) -> Dict[int, np.ndarray]:
    """Every person-like box of a MOT gt.txt (any flag or visibility: each is a person to hide)."""
    try:
        truth = read_mot(path, evaluation=False)
    except MotFormatError as exc:
        raise ValueError(f"--ground-truth: {exc}") from None
    if not truth:
        raise ValueError(f"--ground-truth: {path} holds no person box")
    return truth


def sample_frames(path: PathLike, count: int, stated: int = 0) -> List[np.ndarray]:
    """About ``count`` frames spread over the whole video (one decoding pass, few frames held)."""
    if count < 1:
        return []
    stride = max(1, stated // count) if stated else 1
    kept: List[np.ndarray] = []
    for index, rgb in enumerate(read_frames(path)):
        if index % stride == 0:
            kept.append(rgb)
            if len(kept) >= 2 * count:  # the stated count was wrong or absent: thin out
                kept, stride = kept[::2], stride * 2
    return kept[::max(1, len(kept) // count)][:count] if len(kept) > count else kept


def prime_detectors(detectors: List, path: PathLike, info: VideoInfo) -> None:
    """Give every detector that has ``prime`` one sample of the video (decoded once for all of them)."""
    primed = [d for d in detectors if hasattr(d, "prime")]
    if primed:
        sample = sample_frames(path, PRIME_FRAMES, info.frames)
        for d in primed:
            d.prime(sample)


def _detect(detector, index: int, rgb: np.ndarray) -> np.ndarray:
    """The detector's boxes as finite ``(N, 6)``; raises on anything else (the frame then fails closed)."""
    boxes = np.asarray(detector(index, rgb), dtype=np.float64)
    boxes = boxes.reshape(-1, 6) if boxes.size else np.zeros((0, 6))
    if not np.isfinite(boxes[:, :5]).all():
        raise ValueError(f"frame {index}: the detector returned a box that is not finite")
    return boxes


def _linker(detector, fps: float) -> Optional[Callable[[int, np.ndarray], np.ndarray]]:
    """Track ids: a MOT file's own when it has them, else ``TrackLinker``'s (needed to fill gaps)."""
    if getattr(detector, "has_tracks", False):
        return None
    from .tracklets import TrackLinker

    return TrackLinker(float(fps)).update


def plan_video(path: PathLike, info: VideoInfo, detector, temporal: TemporalSettings = TemporalSettings(),
               fail_closed: bool = False, progress: bool = True) -> VideoPlan:
    """Detect, track, fill and clip the boxes of every frame of ``path`` (see the module docstring).

    With ``fail_closed`` a ``motion`` detector's boxes are the moving area every frame's boxes must cover.
    """
    motion = build_detector("motion") if fail_closed else None
    prime_detectors([detector, motion], path, info)
    link = _linker(detector, info.fps)
    detected: Dict[int, np.ndarray] = {}
    moving: Dict[int, np.ndarray] = {}
    failed: Dict[int, str] = {}
    counts = {"frames": 0, "boxes_detected": 0, "detector_errors": 0}
    first_error = ""
    for index, rgb in tqdm(enumerate(read_frames(path)), total=info.frames or None, desc="detect", unit="frame",
                           disable=None if progress else True, dynamic_ncols=True, leave=False):
        counts["frames"] += 1
        try:
            boxes = _detect(detector, index, rgb)
        except Exception as exc:  # any detector failure: this frame is desensitized whole, never passed raw
            counts["detector_errors"] += 1
            failed[index] = f"detector error ({type(exc).__name__}: {exc})"
            first_error = first_error or f"frame {index}: {type(exc).__name__}: {exc}"
            boxes = np.zeros((0, 6))
        if link is not None:
            boxes = boxes.copy()
            boxes[:, TRACK] = link(index, boxes)[:, TRACK]
        if len(boxes):
            detected[index] = boxes
            counts["boxes_detected"] += len(boxes)
        if motion is not None:
            try:
                moving[index] = _detect(motion, index, rgb)
            except Exception as exc:
                failed.setdefault(index, f"motion detector error ({type(exc).__name__}: {exc})")
    if counts["frames"] == 0:
        raise VideoError(f"{path}: decoded no frame")
    if first_error:
        log.warning("the detector failed on %d frame(s), each desensitized whole; first: %s",
                    counts["detector_errors"], first_error)
    filled, fill_counts = fill_tracks(detected, counts["frames"], temporal)
    counts.update(fill_counts)
    plans, clip_counts = _clip(filled, info.width, info.height, int(getattr(detector, "outside", 0)))
    counts.update(clip_counts)
    if fail_closed:
        failed.update({f: why for f, why in _uncovered(moving, plans, info).items() if f not in failed})
    for index, why in failed.items():
        plans.setdefault(index, FramePlan(EMPTY.boxes, EMPTY.tracks)).whole = why
    counts["frames_whole"] = len(failed)
    counts["boxes"] = sum(len(p.boxes) for p in plans.values())
    return VideoPlan(counts["frames"], plans, counts)


def clip_boxes(boxes: np.ndarray, width: int, height: int) -> Tuple[np.ndarray, np.ndarray]:
    """``(keep, xyxy)``: which of the ``(N, 4+)`` boxes cover a pixel once clipped to the frame, and
    those as ``(M, 4)`` int64 whole-pixel boxes (top-left floored, bottom-right ceiled)."""
    xyxy = pixel_boxes(boxes, width, height)
    keep = (xyxy[:, 2:] > xyxy[:, :2]).all(axis=1)
    return keep, xyxy[keep]


def _clip(boxes: Dict[int, np.ndarray], width: int, height: int,
          outside: int = 0) -> Tuple[Dict[int, FramePlan], Dict[str, int]]:
    """Whole-pixel boxes clipped to the frame; boxes with no pixel inside counted (with the ``outside``
    ones the detector already counted: a MOT file's), with a warning."""
    plans: Dict[int, FramePlan] = {}
    clipped = 0
    for index in sorted(boxes):
        rows = boxes[index]
        keep, xyxy = clip_boxes(rows, width, height)
        raw = rows[:, :4]
        clipped += int((keep & ((raw[:, :2] < 0).any(axis=1) | (raw[:, 2] > width) | (raw[:, 3] > height))).sum())
        outside += int((~keep & ~is_filled(rows)).sum())  # a track carried past the frame's edge is no loss
        if keep.any():
            plans[index] = FramePlan(xyxy, rows[keep, TRACK].astype(np.int64))
    warn_outside(outside, width, height)
    return plans, {"boxes_outside": outside, "boxes_clipped": clipped}


def warn_outside(outside: int, width: int, height: int) -> None:
    """The warning for boxes with no pixel in the frame: counted, never dropped in silence."""
    if outside:
        log.warning("%d box(es) lie wholly outside the %dx%d frame and hide nothing: are the detections made "
                    "for this video's resolution?", outside, width, height)


def _uncovered(moving: Dict[int, np.ndarray], plans: Dict[int, FramePlan], info: VideoInfo) -> Dict[int, str]:
    """Frames with a moving blob whose box is less than ``BOX_MIN`` covered by the frame's boxes."""
    out: Dict[int, str] = {}
    for index, blobs in moving.items():
        if not len(blobs):
            continue
        mask = box_mask(plans.get(index, EMPTY).boxes, info.height, info.width)
        worst = min((c.box for c in coverage(mask, blobs) if c is not None), default=1.0)
        if worst < BOX_MIN:
            out[index] = f"fail-closed: a moving area only {worst:.0%} covered by boxes"
    return out

