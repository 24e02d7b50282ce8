"""Privacy recall: the share of ground-truth people whose pixels the published video hid.

Why this number: a person the pipeline misses is published raw, so detection scores (IoU,
precision) are not what a camera operator needs to know; what matters is whether each person's
pixels ended up under anonymized ones. A ground-truth box counts as *hidden* when at least
``HEAD_MIN`` (90%) of its head band (the top fifth of the box, where the face is) and at least
``BOX_MIN`` (70%) of the whole box lie under anonymized pixels. A box is counted per frame: a
person seen on 50 frames is 50 people-frames, as a hand-labelled frame sample counts them.

The anonymized pixels are the pipeline's own record of what it replaced (every pasted box, every
frame desensitized whole), so the metric is exact and independent of how different P looks from
O. Coverage is read from an integral image: O(1) per box.

Usage::

    recall = PrivacyRecall(read_mot("gt.txt", evaluation=False), width, height)
    for index, mask in masks:           # mask: H x W bool, True where the output was anonymized
        recall.add(index, mask)
    report = recall.report()            # people, hidden, recall, worst frame, missed boxes
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np

from .mot import TRACK, pixel_boxes

HEAD_SHARE = 0.2  # the head band: the top fifth of a person's box
HEAD_MIN = 0.9  # share of the head band that must be anonymized
BOX_MIN = 0.7  # share of the whole box that must be anonymized


@dataclass(frozen=True)
class Coverage:
    """How much of one person's box and head band lies under anonymized pixels."""

    head: float
    box: float

    @property
    def hidden(self) -> bool:
        return self.head >= HEAD_MIN and self.box >= BOX_MIN


def box_mask(boxes: np.ndarray, height: int, width: int, whole: bool = False) -> np.ndarray:
    """The ``height x width`` mask of the pixels under the ``(N, 4)`` whole-pixel boxes (all of them with ``whole``):
    what an output anonymized, as the pipeline records it."""
    mask = np.full((height, width), bool(whole))
    if not whole:
        for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.int64).reshape(-1, 4).tolist():
            mask[y1:y2, x1:x2] = True
    return mask


def _integral(mask: np.ndarray) -> np.ndarray:
    """(H+1, W+1) summed-area table of a boolean mask."""
    out = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)
    np.cumsum(np.cumsum(mask, axis=0, dtype=np.int64), axis=1, out=out[1:, 1:])
    return out


def _area(table: np.ndarray, x1: int, y1: int, x2: int, y2: int) -> int:
    return int(table[y2, x2] - table[y1, x2] - table[y2, x1] + table[y1, x1])


def coverage(mask: np.ndarray, boxes: np.ndarray, table: Optional[np.ndarray] = None) -> List[Optional[Coverage]]:
    """Coverage of each ``(N, 4+)`` box by ``mask`` (H x W bool); None for a box with no pixel in the frame.

    A box's pixels are the whole pixels it touches (top-left floored, bottom-right ceiled, clipped
    to the frame); its head band is its top ``ceil(HEAD_SHARE x height)`` rows, at least one.
    """
    h, w = mask.shape
    table = _integral(mask) if table is None else table
    out: List[Optional[Coverage]] = []
    boxes = np.asarray(boxes, dtype=np.float64)
    boxes = boxes.reshape(len(boxes), -1)[:, :4] if boxes.size else np.zeros((0, 4))
    for x1, y1, x2, y2 in pixel_boxes(boxes, w, h).tolist():
        if x2 <= x1 or y2 <= y1:
            out.append(None)
            continue
        head_y2 = y1 + max(1, math.ceil(HEAD_SHARE * (y2 - y1)))
        box_cov = _area(table, x1, y1, x2, y2) / ((x2 - x1) * (y2 - y1))
        head_cov = _area(table, x1, y1, x2, head_y2) / ((x2 - x1) * (head_y2 - y1))
        out.append(Coverage(head_cov, box_cov))
    return out


class PrivacyRecall:
    """Accumulates, frame by frame, which ground-truth people the output hid.

    ``truth``: ``{0-based frame: (N, 6) boxes}`` (:func:`.mot.read_mot`, ``evaluation=False`` so
    that every person-like row counts); frames never added (past the video's end) are reported
    as ``frames_missing`` with their people, not scored.
    """

    def __init__(self, truth: Dict[int, np.ndarray], width: int, height: int) -> None:
        self.truth = {int(f): np.asarray(b, dtype=np.float64).reshape(-1, 6) for f, b in truth.items()}
        self.width, self.height = int(width), int(height)
        self.people = self.hidden = self.outside = 0
        self.per_frame: Dict[int, tuple] = {}  # frame -> (people, hidden)
        self.missed: List[dict] = []
        self._seen: set = set()

    def add(self, frame: int, mask: np.ndarray) -> None:
        """Score the ground-truth people of ``frame`` against its anonymized-pixel ``mask``."""
        if mask.shape != (self.height, self.width):
            raise ValueError(f"mask: expected {(self.height, self.width)}, got {mask.shape}")
        self._seen.add(int(frame))
        boxes = self.truth.get(int(frame))
        if boxes is None or not len(boxes):
            return
        people = hidden = 0
        for row, cov in zip(boxes, coverage(mask, boxes)):
            if cov is None:
                self.outside += 1
                continue
            people += 1
            if cov.hidden:
                hidden += 1
            else:
                self.missed.append({"frame": int(frame), "track": int(row[TRACK]),
                                    "box": [round(float(v), 2) for v in row[:4]],
                                    "head_covered": round(cov.head, 4), "box_covered": round(cov.box, 4)})
        self.people += people
        self.hidden += hidden
        self.per_frame[int(frame)] = (people, hidden)

    @property
    def recall(self) -> float:
        """Hidden people / people (1.0 when no person was on any scored frame)."""
        return self.hidden / self.people if self.people else 1.0

    def worst_frame(self) -> Optional[dict]:
        """The frame with the lowest share hidden (most people missed on ties, then the earliest)."""
        if not self.per_frame:
            return None
        frame, (people, hidden) = min(self.per_frame.items(),
                                      key=lambda kv: (kv[1][1] / kv[1][0], -(kv[1][0] - kv[1][1]), kv[0]))
        return {"frame": frame, "people": people, "hidden": hidden, "recall": hidden / people}

    def report(self) -> dict:
        missing = sorted(set(self.truth) - self._seen)
        return {"people": self.people, "hidden": self.hidden, "missed": self.people - self.hidden,
                "recall": self.recall, "worst_frame": self.worst_frame(),
                "rule": {"head_share": HEAD_SHARE, "head_min": HEAD_MIN, "box_min": BOX_MIN},
                "outside_frame": self.outside,
                "frames_missing": len(missing), "people_on_missing_frames": int(sum(len(self.truth[f]) for f in missing)),
                "frames_scored": len(self._seen), "missed_boxes": self.missed}

    def missed_boxes(self) -> Dict[int, np.ndarray]:
        """The missed people as ``{frame: (N, 6)}`` boxes (track column kept), for :func:`.mot.write_mot`."""
        out: Dict[int, list] = {}
        for m in self.missed:
            out.setdefault(m["frame"], []).append([*m["box"], 1.0, m["track"]])
        return {f: np.asarray(v, dtype=np.float64) for f, v in out.items()}


def summary_line(report: dict) -> str:
    """``privacy recall 0.973 (146 of 150 people hidden); worst frame 12: 3 of 5``."""
    line = f"privacy recall {report['recall']:.3f} ({report['hidden']} of {report['people']} people hidden)"
    worst = report.get("worst_frame")
    if worst is not None:
        line += f"; worst frame {worst['frame']}: {worst['hidden']} of {worst['people']}"
    return line
