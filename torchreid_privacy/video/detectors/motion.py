"""``motion``: moving people of a fixed camera, by background subtraction (OpenCV's MOG2).

Why: a fixed camera's background is learnt in seconds, and whatever differs from it is a
candidate person whatever its size, pose or clothing, where an appearance detector (HOG, a CNN)
misses small, occluded or unusual people. It also boxes non-people (cars, moving shadows,
lighting changes): for privacy a false box costs a few anonymized pixels, a missed person
costs a published face. So the blobs are only filtered by size, then cut into person-shaped
boxes: a blob much wider than a person (a group walking side by side) becomes several boxes.

The background learns slowly (``learning_rate``), so someone who stops walking stays
foreground for ~``1 / learning_rate`` frames; ``prime(frames)`` starts the model from the
per-pixel median of frames sampled across the video, so people present in the first frame are
not learnt as background (a median over a sample is the empty street where people move).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from torchreid_privacy.registry import DETECTORS

from .base import check_options, frame_size, make_boxes, no_boxes, positive, refuse_arg, threshold_or

FOREGROUND = 255  # MOG2's mask value for foreground (shadows are 127, background 0)


class MotionDetector:
    """Background subtraction -> cleaned blobs -> person boxes, on a downscaled copy of each frame.

    ``scale``: the frame is shrunk by it for speed (boxes are scaled back); ``learning_rate``:
    MOG2's per-frame rate; ``var_threshold``: MOG2's squared Mahalanobis distance for foreground;
    ``min_height``: smallest blob height (frame px); ``min_area``: smallest foreground pixel count
    of a blob (frame px, default ``0.12 * min_height**2``); ``person_aspect``: a person's
    width / height, so a blob wider than ``split_aspect * height`` is cut into
    ``ceil(width / (person_aspect * height))`` boxes side by side; ``pad``: each box grows by this
    share of its height on every side; ``min_score``: the score (foreground fill squashed to
    (0, 1]) a box needs. Without ``prime`` the first frame (and the first of a new frame size) is
    taken as the background, people in it too.

    Usage::

        motion = MotionDetector()
        motion.prime(sample_of_frames)   # optional: median background, people in frame 0 stay foreground
        boxes = motion(0, rgb)
    """

    name = "motion"

    def __init__(self, min_score: float = 0.0, scale: float = 0.5, learning_rate: float = 0.001,
                 var_threshold: float = 16.0, min_height: float = 20.0, min_area: Optional[float] = None,
                 person_aspect: float = 0.45, split_aspect: float = 0.8, pad: float = 0.05,
                 history: int = 500) -> None:
        import cv2

        if not 0.0 <= float(min_score) <= 1.0:
            raise ValueError(f"--detector-threshold: the motion score threshold is in [0, 1], got {min_score}")
        if not 0.0 < float(scale) <= 1.0:
            raise ValueError(f"--detector: motion option scale must be in (0, 1], got {scale}")
        if not 0.0 <= float(learning_rate) <= 1.0:
            raise ValueError(f"--detector: motion option learning_rate must be in [0, 1], got {learning_rate}")
        positive("motion", "var_threshold", var_threshold)
        positive("motion", "min_height", min_height)
        positive("motion", "person_aspect", person_aspect)
        positive("motion", "split_aspect", split_aspect)
        positive("motion", "pad", pad, allow_zero=True)
        if min_area is not None:
            positive("motion", "min_area", min_area, allow_zero=True)
        if int(history) != history or history < 1:
            raise ValueError(f"--detector: motion option history must be a positive integer, got {history}")
        self._cv2 = cv2
        self.min_score, self.scale, self.learning_rate = float(min_score), float(scale), float(learning_rate)
        self.var_threshold, self.min_height = float(var_threshold), float(min_height)
        self.min_area = 0.12 * self.min_height ** 2 if min_area is None else float(min_area)
        self.person_aspect, self.split_aspect, self.pad = float(person_aspect), float(split_aspect), float(pad)
        self.history = int(history)
        self._model = None
        self._size: Optional[Tuple[int, int]] = None  # (width, height) the model was made for
        self.resets = 0  # times the frame size changed and the background was started anew
        self._open = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
        self._close = cv2.getStructuringElement(cv2.MORPH_RECT, (5, 11))  # tall: joins a head to its body

    def settings(self) -> Dict[str, Any]:
        return {"min_score": self.min_score, "scale": self.scale, "learning_rate": self.learning_rate,
                "var_threshold": self.var_threshold, "min_height": self.min_height, "min_area": self.min_area,
                "person_aspect": self.person_aspect, "split_aspect": self.split_aspect, "pad": self.pad,
                "history": self.history}

    # ----------------------------------------------------------------------------- background

    def _small(self, rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        size = (max(1, int(round(w * self.scale))), max(1, int(round(h * self.scale))))
        img = np.ascontiguousarray(rgb)
        return img if size == (w, h) else self._cv2.resize(img, size, interpolation=self._cv2.INTER_AREA)

    def _new_model(self, size: Tuple[int, int]) -> None:
        self._model = self._cv2.createBackgroundSubtractorMOG2(history=self.history, varThreshold=self.var_threshold,
                                                               detectShadows=True)
        if self._size is not None and self._size != size:
            self.resets += 1
        self._size = size

    def prime(self, frames: Sequence[np.ndarray]) -> None:
        """Start the background from the per-pixel median of ``frames`` (a sample across the video)."""
        frames = [f for f in frames if isinstance(f, np.ndarray) and f.ndim == 3 and f.shape[2] == 3]
        if not frames:
            return
        size = frame_size(frames[0])
        same = [self._small(f) for f in frames if frame_size(f) == size]
        median = np.median(np.stack(same), axis=0).astype(np.uint8)
        self._new_model(size)
        self._model.apply(median, learningRate=1.0)  # one component per pixel: the median, weight 1

    # ----------------------------------------------------------------------------------- boxes

    def __call__(self, frame_index: int, rgb: np.ndarray) -> np.ndarray:
        cv2 = self._cv2
        width, height = frame_size(rgb)
        small = self._small(rgb)
        if self._model is None or self._size != (width, height):  # not primed (or a new size): this frame
            self._new_model((width, height))                      # is the background, people in it too
            self._model.apply(small, learningRate=1.0)
        mask = self._model.apply(small, learningRate=self.learning_rate)
        fg = (mask == FOREGROUND).astype(np.uint8)
        fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, self._open)
        fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, self._close)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
        sx, sy = width / small.shape[1], height / small.shape[0]
        boxes: List[np.ndarray] = []
        scores: List[float] = []
        for i in range(1, count):
            x, y, w, h, area = (int(v) for v in stats[i])
            if h * sy < self.min_height or area * sx * sy < self.min_area:
                continue
            blob = labels[y:y + h, x:x + w] == i
            for x1, x2 in self._split(w, h * sy / sx):
                fill = float(blob[:, x1:x2].mean()) if x2 > x1 else 0.0
                score = 1.0 - math.exp(-4.0 * fill)  # a person fills ~40-60% of its box: ~0.8-0.9
                if score < self.min_score or fill == 0.0:
                    continue
                pad = self.pad * h * sy
                boxes.append(np.array([(x + x1) * sx - pad, y * sy - pad, (x + x2) * sx + pad, (y + h) * sy + pad]))
                scores.append(score)
        if not boxes:
            return no_boxes()
        return make_boxes(np.stack(boxes), np.asarray(scores), width, height)

    def _split(self, width: int, height: float) -> List[Tuple[int, int]]:
        """Column ranges (blob pixels) of the person boxes a blob ``width`` wide and ``height`` tall holds."""
        if width <= self.split_aspect * height:
            return [(0, width)]
        n = max(1, math.ceil(width / (self.person_aspect * height)))
        edges = np.linspace(0, width, n + 1).round().astype(int)
        return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


@DETECTORS.register("motion")
def motion(arg: Optional[str], *, threshold: Optional[float] = None, **options: Any) -> MotionDetector:
    """``motion``: ``threshold`` is the score threshold (default 0: every blob); ``options``:
    :class:`MotionDetector`'s."""
    refuse_arg("motion", arg)
    check_options("motion", MotionDetector, options, reserved=("min_score",))
    return MotionDetector(min_score=threshold_or(threshold, 0.0), **options)
