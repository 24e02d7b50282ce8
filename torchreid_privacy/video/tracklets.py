"""Per-frame person boxes linked into tracklets (ByteTrack), and their quality against ground truth.

Why ByteTrack (``supervision``'s, 0.30.x): it links by box overlap and a Kalman motion model
alone, with no appearance network to download, and keeps low-score boxes for a second round of
matching, so a person stays one tracklet through partial occlusions. A tracklet is what a
video-made ReID set takes as one identity, so :func:`evaluate_tracklets` measures exactly what
matters for it: whether a tracklet holds one person (purity) and how much of each person it
finds (coverage).

Usage::

    linker = TrackLinker(fps=25)
    for index, frame in enumerate(read_frames("street.mp4")):
        boxes = linker.update(index, detector(index, frame))   # column 5: tracklet id or -1
"""
from __future__ import annotations

import warnings
from collections import Counter
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

from .mot import TRACK

Tracklets = Dict[int, List[Tuple[int, np.ndarray]]]  # tracklet id -> [(frame, xyxy)], frames increasing


class TrackLinker:
    """Links per-frame boxes into tracklets with supervision's ByteTrack (sv.ByteTrack, supervision 0.30.x).

    ``min_score``: boxes scoring below it only extend existing tracklets (ByteTrack's second
    round) and never start one; ``lost_frames``: how many frames a tracklet may go unseen and
    still be resumed (default: one second of video); ``match_iou``: ByteTrack's
    ``minimum_matching_threshold``, the largest matching cost ``1 - IoU x score`` it accepts.
    A tracklet gets its id on its second frame (a single-frame box is more often noise), so the
    first box of each tracklet stays -1.
    """

    def __init__(self, fps: float, min_score: float = 0.3, lost_frames: Optional[int] = None,
                 match_iou: float = 0.8) -> None:
        import supervision as sv

        if not fps > 0:
            raise ValueError(f"fps: must be > 0, got {fps}")
        if not 0.0 <= min_score < 1.0:
            raise ValueError(f"min_score: must be in [0, 1), got {min_score}")
        if not 0.0 < match_iou <= 1.0:
            raise ValueError(f"match_iou: must be in (0, 1], got {match_iou}")
        self.lost_frames = max(1, round(fps)) if lost_frames is None else int(lost_frames)
        if self.lost_frames < 0:
            raise ValueError(f"lost_frames: must be >= 0, got {lost_frames}")
        self.fps, self.min_score, self.match_iou = float(fps), float(min_score), float(match_iou)
        self._sv = sv
        with warnings.catch_warnings():  # deprecated in 0.28, removed in 0.31: the package pins <0.31
            warnings.filterwarnings("ignore", message=r"The `ByteTrack` was deprecated", category=FutureWarning)
            # ByteTrack keeps a track lost for lost_track_buffer * frame_rate / 30 frames: at
            # frame_rate 30 the buffer is in frames exactly
            self._tracker = sv.ByteTrack(track_activation_threshold=self.min_score,
                                         lost_track_buffer=self.lost_frames,
                                         minimum_matching_threshold=self.match_iou,
                                         frame_rate=30.0, minimum_consecutive_frames=1)
        self._last = -1

    def settings(self) -> Dict[str, float]:
        return {"tracker": "bytetrack", "fps": self.fps, "min_score": self.min_score,
                "lost_frames": self.lost_frames, "match_iou": self.match_iou}

    def update(self, frame_index: int, boxes: np.ndarray) -> np.ndarray:
        """boxes (N,6) x1,y1,x2,y2,conf,track -> a copy with column 5 set to the tracklet id (>= 1)
        of each row, -1 for rows not (yet) tracked. Row order and coordinates are the input's (the
        tracker's own smoothed boxes are matched back to the input rows by IoU).

        Frame indices must increase; frames skipped between two calls count as frames
        without any box, so ``lost_frames`` is measured in video frames.
        """
        if frame_index <= self._last:
            raise ValueError(f"frame_index: must increase, got {frame_index} after {self._last}")
        for _ in range(self._last + 1, frame_index):
            self._step(np.zeros((0, 6)))
        self._last = frame_index
        return self._step(np.asarray(boxes, dtype=np.float64).reshape(-1, 6))

    def _step(self, boxes: np.ndarray) -> np.ndarray:
        n = len(boxes)
        detections = self._sv.Detections(xyxy=boxes[:, :4].astype(np.float32),
                                         confidence=boxes[:, 4].astype(np.float32),
                                         class_id=np.zeros(n, dtype=int), data={"row": np.arange(n)})
        tracked = self._tracker.update_with_detections(detections)
        out = boxes.copy()
        out[:, TRACK] = -1
        if len(tracked):
            out[tracked.data["row"], TRACK] = tracked.tracker_id
        return out


def link_video(frames_and_boxes: Iterable[Tuple[int, np.ndarray]], fps: float, **kw) -> Tracklets:
    """``{tracklet id: [(frame, xyxy), ...]}`` of the boxes of a whole video (``kw``: :class:`TrackLinker`'s)."""
    linker = TrackLinker(fps, **kw)
    tracklets: Tracklets = {}
    for frame, boxes in frames_and_boxes:
        for row in linker.update(frame, boxes):
            if row[TRACK] >= 1:
                tracklets.setdefault(int(row[TRACK]), []).append((frame, row[:4].copy()))
    return tracklets


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix ``(len(a), len(b))`` of two sets of boxes whose first four columns are ``x1, y1, x2, y2``."""
    a, b = (np.asarray(z, dtype=np.float64) for z in (a, b))
    a, b = a.reshape(len(a), -1)[:, :4] if a.size else np.zeros((0, 4)), b.reshape(len(b), -1)[:, :4] if b.size \
        else np.zeros((0, 4))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a, area_b = (np.clip(z[:, 2:] - z[:, :2], 0, None).prod(-1) for z in (a, b))
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _match_frame(boxes: List[Tuple[int, np.ndarray]], truth: List[Tuple[int, np.ndarray]],
                 iou: float) -> List[Tuple[int, int]]:
    """One-to-one ``(tracklet, gt track)`` pairs of one frame: the assignment of largest total IoU, pairs >= ``iou``."""
    from scipy.optimize import linear_sum_assignment

    if not boxes or not truth:
        return []
    overlap = box_iou(np.stack([b for _, b in boxes]), np.stack([g for _, g in truth]))
    rows, cols = linear_sum_assignment(-overlap)
    return [(boxes[r][0], truth[c][0]) for r, c in zip(rows, cols) if overlap[r, c] >= iou]


def evaluate_tracklets(tracklets: Tracklets, gt_tracks: Dict[int, Dict[int, np.ndarray]], iou: float = 0.5) -> dict:
    """How well ``tracklets`` follow the ground truth ``{gt track: {frame: xyxy}}`` (:func:`.mot.tracks_of`).

    Each frame's tracklet boxes are matched one-to-one to its ground-truth boxes (IoU >= ``iou``).
    ``purity``: the box-weighted share of each tracklet's matched boxes that belong to its
    majority GT track: the label accuracy of a ReID set made of these tracklets.
    ``precision``: the share of tracklet boxes matching any GT box (kept apart from purity, so
    loose boxes, HOG's for one, are not mistaken for mixed identities). ``coverage``: the share
    of GT boxes matched by a tracklet box. ``id_switches``: times a GT track's matched tracklet
    changes from one matched frame to its next.
    """
    if not 0.0 < iou <= 1.0:
        raise ValueError(f"iou: must be in (0, 1], got {iou}")
    by_frame: Dict[int, List[Tuple[int, np.ndarray]]] = {}
    for tid, boxes in tracklets.items():
        for frame, box in boxes:
            by_frame.setdefault(frame, []).append((tid, np.asarray(box, dtype=np.float64)))
    truth_by_frame: Dict[int, List[Tuple[int, np.ndarray]]] = {}
    for gid, frames in gt_tracks.items():
        for frame, box in frames.items():
            truth_by_frame.setdefault(frame, []).append((gid, np.asarray(box, dtype=np.float64)))
    owners: Dict[int, Counter] = {tid: Counter() for tid in tracklets}
    followed: Dict[int, List[Tuple[int, int]]] = {}  # gt track -> [(frame, tracklet)]
    for frame in sorted(by_frame):
        for tid, gid in _match_frame(by_frame[frame], truth_by_frame.get(frame, []), iou):
            owners[tid][gid] += 1
            followed.setdefault(gid, []).append((frame, tid))
    n_boxes = sum(len(b) for b in tracklets.values())
    n_gt = sum(len(f) for f in gt_tracks.values())
    n_matched = sum(sum(c.values()) for c in owners.values())
    majority = sum(max(c.values(), default=0) for c in owners.values())
    switches = sum(sum(a[1] != b[1] for a, b in zip(seq, seq[1:])) for seq in followed.values())
    return {"purity": majority / n_matched if n_matched else 0.0,
            "precision": n_matched / n_boxes if n_boxes else 0.0,
            "coverage": n_matched / n_gt if n_gt else 0.0,
            "iou": iou, "tracklets": len(tracklets), "gt_tracks": len(gt_tracks),
            "boxes": n_boxes, "gt_boxes": n_gt, "matched_boxes": n_matched,
            "unmatched_boxes": n_boxes - n_matched, "id_switches": int(switches)}
