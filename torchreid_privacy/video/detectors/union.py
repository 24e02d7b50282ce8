"""``A+B``: the union of several detectors' boxes, overlapping ones merged into their enclosing box.

Why a union: detectors fail on different people (background subtraction misses who stands
still, HOG misses the small and the occluded, a file misses what its detector missed), and a
person any of them finds must be hidden. Why the *enclosing* box when two boxes of the same
person overlap: never shrink what a detector boxed, the privacy cost of a few more pixels is
nothing beside a half-hidden face.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

import numpy as np

from .base import Detector, box_iou, forward_prime, no_boxes

MERGE_IOU = 0.5


def merge_boxes(groups: Sequence[np.ndarray], iou: float = MERGE_IOU) -> np.ndarray:
    """One ``(N, 6)`` array from each detector's ``(N_i, 6)`` boxes, in the order given.

    A box of a later group that overlaps (IoU >= ``iou``) a box kept so far is merged into it:
    the enclosing box, the larger score, the first track id >= 0. Each kept box absorbs at most
    one box of each later group (pairs matched greedily by IoU), so two people one detector
    separates stay two boxes. Boxes of one group are never merged with each other.
    """
    kept = no_boxes()
    for group in groups:
        group = np.asarray(group, dtype=np.float64).reshape(-1, 6)
        if not len(group):
            continue
        if not len(kept):
            kept = group.copy()
            continue
        overlap = box_iou(kept, group)
        matched = np.zeros(len(group), dtype=bool)
        while overlap.size and overlap.max() >= iou:
            i, j = np.unravel_index(int(np.argmax(overlap)), overlap.shape)
            a, b = kept[i], group[j]
            kept[i, :2] = np.minimum(a[:2], b[:2])
            kept[i, 2:4] = np.maximum(a[2:4], b[2:4])
            kept[i, 4] = max(a[4], b[4])
            if a[5] < 0 <= b[5]:
                kept[i, 5] = b[5]
            matched[j] = True
            overlap[i, :] = -1.0
            overlap[:, j] = -1.0
        kept = np.concatenate([kept, group[~matched]])
    return kept


class UnionDetector:
    """Calls each detector on every frame and merges their boxes (:func:`merge_boxes`).

    ``name`` is the spec it was built from; ``has_tracks`` only when every part has track ids
    (otherwise some boxes come without one and a tracker is still needed).

    Usage::

        both = UnionDetector([MotionDetector(), HogDetector()], name="motion+hog")
        both.prime(sample)           # forwarded to each part that has prime()
        boxes = both(0, rgb)
    """

    def __init__(self, parts: Sequence[Detector], name: str = "", iou: float = MERGE_IOU) -> None:
        if not parts:
            raise ValueError("--detector: a union needs at least one detector")
        if not 0.0 < float(iou) <= 1.0:
            raise ValueError(f"--detector: the union's merge IoU must be in (0, 1], got {iou}")
        self.parts: List[Detector] = list(parts)
        self.name = name or "+".join(p.name for p in self.parts)
        self.iou = float(iou)
        self.has_tracks = all(bool(getattr(p, "has_tracks", False)) for p in self.parts)

    def settings(self) -> Dict[str, Any]:
        return {"merge_iou": self.iou, "parts": {p.name: p.settings() for p in self.parts}}

    @property
    def outside(self) -> int:
        """Boxes of the parts that had no pixel inside their frame (MOT files)."""
        return sum(int(getattr(p, "outside", 0)) for p in self.parts)

    def prime(self, frames: Sequence[np.ndarray]) -> None:
        forward_prime(self.parts, frames)

    def __call__(self, frame_index: int, rgb: np.ndarray) -> np.ndarray:
        return merge_boxes([p(frame_index, rgb) for p in self.parts], self.iou)
